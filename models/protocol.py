"""The MQTT contract between agents and the control plane: topics and payload schemas.

One definition, imported by both sides. docs/protocol.md describes the rules (QoS, retain,
ordering, idempotency).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Final, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from hwprobe.profile import DeviceClass

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


# Bounds on what a device may send, so that every value fits its database column (a device
# can be buggy or hostile; one value the database refuses would otherwise fail a whole batch).
INT32_MAX: Final = 2**31 - 1  # Integer columns (PostgreSQL int4)
INT64_MAX: Final = 2**63 - 1  # BigInteger columns
METRIC_ABS_MAX: Final = 1e12  # finite, and sums over millions of samples stay finite
IDENT_MAX_CHARS: Final = 200  # names, versions, ids
DETAIL_MAX_CHARS: Final = 4096  # free text (event details, command errors) is clipped to this
JSON_MAX_BYTES: Final = 64 * 1024  # a free-form object (hardware, command result), serialized
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST: Final = datetime(2200, 1, 1, tzinfo=timezone.utc)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


def _clip_text(value: object) -> object:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")[:DETAIL_MAX_CHARS]
    return value


def check_time_range(value: datetime) -> datetime:
    """`value` when it lies between EARLIEST and LATEST (naive means UTC); else ValueError."""
    try:
        utc = (
            value.replace(tzinfo=timezone.utc)
            if value.tzinfo is None
            else value.astimezone(timezone.utc)
        )
    except OverflowError:
        utc = EARLIEST - (LATEST - EARLIEST)  # out of range either way
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"time must lie between {EARLIEST:%Y} and {LATEST:%Y}")
    return value


def _walk_json(value: object) -> None:
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _walk_json(item)
    elif isinstance(value, list):
        for item in value:
            _walk_json(item)


def check_json_object(value: dict[str, object]) -> dict[str, object]:
    """`value` when it is plain JSON of at most JSON_MAX_BYTES without NUL; else ValueError."""
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not plain JSON: {exc}") from exc
    if size > JSON_MAX_BYTES:
        raise ValueError(f"{size} bytes of JSON; at most {JSON_MAX_BYTES} are accepted")
    _walk_json(value)
    return value


def _finite_values(value: dict[str, float]) -> dict[str, float]:
    for key, number in value.items():
        _no_nul(key)
        if not math.isfinite(number) or abs(number) > METRIC_ABS_MAX:
            raise ValueError(f"{key}: {number} is not a finite number below {METRIC_ABS_MAX:g}")
    return value


Ident = Annotated[str, Field(max_length=IDENT_MAX_CHARS), AfterValidator(_no_nul)]
Detail = Annotated[str, BeforeValidator(_clip_text), Field(max_length=DETAIL_MAX_CHARS)]
Timestamp = Annotated[datetime, AfterValidator(check_time_range)]
JsonObject = Annotated[dict[str, object], AfterValidator(check_json_object)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Count64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
Metric = Annotated[float, Field(allow_inf_nan=False, ge=-METRIC_ABS_MAX, le=METRIC_ABS_MAX)]


class Message(BaseModel):
    """Fields every payload carries."""

    v: Literal[1] = PROTOCOL_VERSION
    ts: Timestamp = Field(default_factory=utcnow)


class ActiveModel(BaseModel):
    """What a device is serving."""

    name: Ident
    version: Ident
    variant: Ident
    engine: Ident


class DeviceState(Message):
    """`state` (retained; the Last Will publishes online=false)."""

    online: bool
    seq: Count64 = Field(default=0, description="rises with every state the agent publishes")
    agent_version: Ident = ""
    device_class: Ident = ""
    hardware: JsonObject | None = Field(
        default=None, description="the hwprobe profile (JSON contract in docs/hwprobe.md)"
    )
    hardware_digest: Ident = ""
    active: ActiveModel | None = None
    desired_version: Count32 = Field(default=0, description="last desired version applied")
    settings: JsonObject | None = Field(
        default=None, description="agent settings in effect (AgentSettings fields)"
    )
    settings_error: Detail = Field(default="", description="why the last settings were refused")


LogLevel = Literal["debug", "info", "warning", "error"]
PROBE_MAX_TOKENS: Final = 256


class ProbePrompt(BaseModel):
    """One fixed prompt of a quality probe and the answer it must produce."""

    prompt: Annotated[str, Field(min_length=1, max_length=DETAIL_MAX_CHARS)]
    expect: Annotated[str, Field(max_length=DETAIL_MAX_CHARS)] = Field(
        description="the answer must contain this text (case and surrounding space ignored)"
    )
    max_tokens: int = Field(default=32, ge=1, le=PROBE_MAX_TOKENS)


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
    probe: list[ProbePrompt] = Field(
        default_factory=list,
        max_length=16,
        description="quality probe: prompts whose greedy answers must match at the health check",
    )


class AgentSettings(BaseModel):
    """Agent settings the control plane may set remotely; None leaves the local value."""

    model_config = {"extra": "forbid"}

    parallel: int | None = Field(default=None, ge=1, le=64, description="request slots")
    keep_alive_s: float | None = Field(
        default=None, ge=-1, le=7 * 86400, description="idle unload after; -1 never, 0 at once"
    )
    telemetry_interval_s: float | None = Field(default=None, ge=1, le=3600)
    log_level: LogLevel | None = None
    api_key_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the REST API key, as its SHA-256 (the key itself never crosses MQTT)",
    )


class AgentRelease(BaseModel):
    """An agent version the control plane wants the device to run."""

    version: Ident
    release_url: str = Field(max_length=2048, description="URL of the signed release.json")
    rollout_id: str | None = None


class DesiredState(Message):
    """`desired` (retained), versioned: agents ignore versions not above the last applied."""

    version: int = Field(ge=0)
    models: list[DesiredModel] = Field(default_factory=list)
    agent: AgentRelease | None = Field(default=None, description="None: keep the running agent")
    settings: AgentSettings | None = Field(default=None, description="None: local settings")


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

    desired_version: Count32
    rollout_id: Ident | None = None
    model: Ident
    kind: EventKind
    detail: Detail = ""
    bytes_done: Count64 | None = None
    bytes_total: Count64 | None = None
    health: Annotated[dict[Ident, float], AfterValidator(_finite_values)] | None = Field(
        default=None, max_length=64
    )


class TelemetrySample(BaseModel):
    """One point in time on a device."""

    ts: Timestamp = Field(default_factory=utcnow)
    tokens_per_s: Metric | None = None
    ttft_ms: Metric | None = None
    requests: Count32 = 0
    queue_depth: Count32 = 0
    errors: Count32 = 0
    cpu_percent: Metric | None = None
    mem_used_bytes: Count64 | None = None
    temperature_c: Metric | None = None
    power_w: Metric | None = None
    # Continuous batching (vLLM's names); None from agents or engines without it.
    num_requests_running: Count32 | None = None
    batch_size: Count32 | None = None  # sequences in the last model step
    kv_cache_usage: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    prefix_cache_hit_tokens: Count32 | None = None  # in this window
    queue_time_ms: Metric | None = None  # mean wait for a slot in this window


class Telemetry(Message):
    """`telemetry`: a batch of samples; `seq` lets the receiver spot gaps and duplicates."""

    seq: Count64
    samples: list[TelemetrySample] = Field(min_length=1, max_length=1000)


class Command(Message):
    """`cmd`: a request the device answers on `cmd/result`."""

    request_id: str
    command: Literal["benchmark", "reprobe", "restart-engine", "logs"]
    args: dict[str, object] = Field(default_factory=dict)


class CommandResult(Message):
    """`cmd/result`."""

    request_id: Ident
    ok: bool
    result: JsonObject = Field(default_factory=dict)
    error: Detail = ""


# Enrollment (HTTP, `POST /api/v1/enroll`): what the agent sends, and the answer the control
# plane gives once and the agent keeps in its data dir. The defaults let an agent read what
# older versions stored.
DEVICE_CLASSES: Final[tuple[str, ...]] = get_args(DeviceClass)
MIN_RSA_BITS: Final = 2048
MIN_EC_BITS: Final = 256


def check_csr(pem: str) -> str:
    """`pem` if it is a certificate request with a valid self-signature and a strong key."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise ValueError(f"csr is not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise ValueError("csr's signature does not match its key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= MIN_EC_BITS:
        return pem
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return pem
    raise ValueError(f"csr's key must be EC of {MIN_EC_BITS}+ bits or RSA of {MIN_RSA_BITS}+")


class EnrollmentRequest(BaseModel):
    """What the agent sends to /enroll."""

    token: str = Field(min_length=1, max_length=200)
    hardware: JsonObject = Field(
        default_factory=dict, description="the hwprobe profile; at most 64 KiB of JSON"
    )
    agent_version: str = Field(default="", max_length=100)
    csr: str | None = Field(
        default=None,
        max_length=8192,
        description="PEM certificate signing request for the device's MQTT client "
        "certificate (the private key stays on the device)",
    )
    name: str = Field(default="", max_length=200)
    device_class: str | None = Field(default=None, max_length=100)

    @field_validator("csr")
    @classmethod
    def _csr(cls, value: str | None) -> str | None:
        return None if value is None else check_csr(value)

    @model_validator(mode="after")
    def _known_device_class(self) -> EnrollmentRequest:
        # The classes hwprobe emits are what rollout selectors match on; a typo here would
        # leave the device out of every rollout by class without a word.
        for value in (self.device_class, self.hardware.get("device_class")):
            if value and value not in DEVICE_CLASSES:
                raise ValueError(
                    f"device_class {value!r} is not one hwprobe reports; use one "
                    f"of {', '.join(DEVICE_CLASSES)}"
                )
        return self


class MqttAccess(BaseModel):
    """How and as whom the device connects to the broker."""

    host: str
    port: int
    tls: bool = False
    username: str
    password: str
    client_id: str
    topic_prefix: str = ""
    ca_pem: str | None = Field(
        default=None,
        description="PEM CA certificate that signs the broker's TLS certificate; null when "
        "TLS is off or the broker's certificate is publicly trusted",
    )
    client_cert_pem: str | None = Field(
        default=None,
        description="the device's TLS client certificate (PEM, subject = device id), issued "
        "from the request it sent; null when it sent none or the control plane has no CA",
    )


class ArtifactAccess(BaseModel):
    """Where the device downloads manifests and files, and its bearer token."""

    base_url: str
    token: str


class EnrollmentResponse(BaseModel):
    """Everything a device gets once, at enrollment (docs/controlplane.md)."""

    device_id: str
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    mqtt: MqttAccess
    artifacts: ArtifactAccess
    signing_public_key: str
    signing_key_id: str = ""
    trusted_public_keys: list[str] = Field(default_factory=list)
