"""The MQTT contract between agents and the control plane: topics and payload schemas.

One definition, imported by both sides. docs/protocol.md describes the rules (QoS, retain,
ordering, idempotency).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Final, Literal

from pydantic import BaseModel, Field

PROTOCOL_VERSION: Final = 1
TOPIC_PREFIX = "ef/v1"
SHARE_GROUP = "cp"


def device_topic(device_id: str, leaf: str) -> str:
    """`ef/v1/devices/{id}/{leaf}`."""
    return f"{TOPIC_PREFIX}/devices/{device_id}/{leaf}"


def shared_subscription(leaf: str, group: str = SHARE_GROUP) -> str:
    """The control plane's shared subscription for one leaf across all devices."""
    return f"$share/{group}/{TOPIC_PREFIX}/devices/+/{leaf}"


def device_id_from_topic(topic: str) -> str | None:
    """The device id in `ef/v1/devices/{id}/...`, or None when the topic is not a device topic."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != TOPIC_PREFIX or parts[2] != "devices":
        return None
    return parts[3] or None


def utcnow() -> datetime:
    """Timezone-aware now."""
    return datetime.now(timezone.utc)


class Message(BaseModel):
    """Fields every payload carries."""

    v: Literal[1] = PROTOCOL_VERSION
    ts: datetime = Field(default_factory=utcnow)


class ActiveModel(BaseModel):
    """What a device is serving."""

    name: str
    version: str
    variant: str
    engine: str


class DeviceState(Message):
    """`state` (retained; the Last Will publishes online=false)."""

    online: bool
    seq: int = Field(default=0, ge=0, description="rises with every state the agent publishes")
    agent_version: str = ""
    device_class: str = ""
    hardware: dict[str, object] | None = Field(
        default=None, description="the hwprobe profile (JSON contract in docs/hwprobe.md)"
    )
    hardware_digest: str = ""
    active: ActiveModel | None = None
    desired_version: int = Field(default=0, ge=0, description="last desired version applied")


class DesiredModel(BaseModel):
    """One model the control plane wants on the device."""

    name: str
    version: str
    manifest_url: str
    files_url: str | None = Field(
        default=None,
        description="base URL of the variant files (`{files_url}/{path}`); "
        "None means the manifest's own directory",
    )
    rollout_id: str | None = None


class DesiredState(Message):
    """`desired` (retained), versioned: agents ignore versions not above the last applied."""

    version: int = Field(ge=0)
    models: list[DesiredModel] = Field(default_factory=list)


EventKind = Literal[
    "accepted",
    "downloading",
    "verifying",
    "loading",
    "health_check",
    "active",
    "failed",
    "rolled_back",
]


class RolloutEvent(Message):
    """`events`: one step of carrying out a desired state."""

    desired_version: int = Field(ge=0)
    rollout_id: str | None = None
    model: str
    kind: EventKind
    detail: str = ""
    bytes_done: int | None = None
    bytes_total: int | None = None
    health: dict[str, float] | None = None


class TelemetrySample(BaseModel):
    """One point in time on a device."""

    ts: datetime = Field(default_factory=utcnow)
    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    requests: int = Field(default=0, ge=0)
    queue_depth: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    cpu_percent: float | None = None
    mem_used_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class Telemetry(Message):
    """`telemetry`: a batch of samples; `seq` lets the receiver spot gaps and duplicates."""

    seq: int = Field(ge=0)
    samples: list[TelemetrySample] = Field(min_length=1, max_length=1000)


class Command(Message):
    """`cmd`: a request the device answers on `cmd/result`."""

    request_id: str
    command: Literal["benchmark", "reprobe", "restart-engine"]
    args: dict[str, object] = Field(default_factory=dict)


class CommandResult(Message):
    """`cmd/result`."""

    request_id: str
    ok: bool
    result: dict[str, object] = Field(default_factory=dict)
    error: str = ""
