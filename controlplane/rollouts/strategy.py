"""The pure rules of a rollout: wave sizes, who goes in which wave, when to advance or abort.

Nothing here touches the database or the broker, so every rule is tested on plain values.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from controlplane.rollouts.health import MAX_SOAK_S, HealthBounds
from models.protocol import INT32_MAX, EventKind, ProbePrompt, check_time_range

MAX_DEVICE_TIMEOUT_S = 7 * 86400.0  # longest a device may take for one rollout step


class DeviceRolloutState(str, Enum):
    """Where one device stands in one rollout (AWS IoT Jobs / hawkBit practice)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ROLLED_BACK = "rolled_back"
    CANCELED = "canceled"


TERMINAL_STATES = frozenset(
    {
        DeviceRolloutState.SUCCEEDED,
        DeviceRolloutState.FAILED,
        DeviceRolloutState.TIMED_OUT,
        DeviceRolloutState.ROLLED_BACK,
        DeviceRolloutState.CANCELED,
    }
)
FAILED_STATES = frozenset(
    {DeviceRolloutState.FAILED, DeviceRolloutState.TIMED_OUT, DeviceRolloutState.ROLLED_BACK}
)


class RolloutStatus(str, Enum):
    """Where the rollout as a whole stands."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


_WAVE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


class Wave(BaseModel):
    """One wave: the cumulative share of the targets reached once it is done."""

    percent: StrictFloat | None = Field(default=None, gt=0, le=100)
    count: StrictInt | None = Field(default=None, ge=1, le=INT32_MAX)

    @model_validator(mode="after")
    def _one_of(self) -> Wave:
        if (self.percent is None) == (self.count is None):
            raise ValueError("a wave is either a percentage ('10%') or a device count ('5')")
        return self

    @classmethod
    def parse(cls, text: str) -> Wave:
        """'10%' -> 10 percent of the targets; '5' -> 5 devices (cumulative)."""
        m = _WAVE_RE.match(text)
        if m is None:
            raise ValueError(f"wave {text!r} is neither a percentage like '10%' nor a count")
        if m.group(2):
            return cls(percent=float(m.group(1)))
        return cls(count=int(float(m.group(1))))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


class Selector(BaseModel):
    """Which devices a rollout targets: all conditions given must hold (empty = every device)."""

    labels: dict[str, str] = Field(default_factory=dict)
    device_classes: list[str] = Field(default_factory=list)
    device_ids: list[str] = Field(default_factory=list)


class Strategy(BaseModel):
    """How a rollout proceeds."""

    waves: list[Wave] = Field(default_factory=lambda: [Wave(percent=100)], min_length=1)
    success_threshold: StrictFloat = Field(
        default=1.0, ge=0, le=1, description="share of a wave that must succeed to advance"
    )
    failure_threshold: StrictFloat = Field(
        default=0.2, gt=0, le=1, description="share of dispatched devices failing that aborts"
    )
    require_approval: StrictBool = Field(
        default=False, description="pause after each wave until an operator resumes"
    )
    device_timeout_s: StrictFloat = Field(default=900.0, gt=0, le=MAX_DEVICE_TIMEOUT_S)
    start_at: Annotated[AwareDatetime, AfterValidator(check_time_range)] | None = None
    soak_s: StrictFloat = Field(
        default=0.0,
        ge=0,
        le=MAX_SOAK_S,
        description="after a device reports active, watch its telemetry this long (0 = off)",
    )
    health: HealthBounds = Field(
        default_factory=HealthBounds, description="regression bounds applied during the soak"
    )
    quality_probe: list[ProbePrompt] = Field(
        default_factory=list,
        max_length=16,
        description="fixed prompts the device answers at its health check; answers must match",
    )

    @field_validator("waves")
    @classmethod
    def _end_at_everyone(cls, waves: list[Wave]) -> list[Wave]:
        last = waves[-1]
        if last.percent != 100:
            waves = [*waves, Wave(percent=100)]
        return waves


def wave_targets(total: int, waves: Sequence[Wave]) -> list[int]:
    """Cumulative device counts after each wave (monotone, last == total)."""
    out: list[int] = []
    prev = 0
    for wave in waves:
        if wave.percent is not None:
            n = math.ceil(total * wave.percent / 100 - 1e-9)
            n = max(n, 1) if total else 0
        else:
            n = wave.count or 0
        n = min(max(n, prev), total)
        out.append(n)
        prev = n
    if out:
        out[-1] = total
    return out


def spread_order(rollout_id: str, device_ids: Iterable[str]) -> list[str]:
    """A stable order that differs per rollout, so the same devices are not always canaries."""
    return sorted(
        device_ids, key=lambda d: hashlib.sha256(f"{rollout_id}:{d}".encode()).hexdigest()
    )


def assign_waves(
    rollout_id: str, device_ids: Iterable[str], waves: Sequence[Wave]
) -> dict[str, int]:
    """Device id -> wave index for the devices known when the rollout starts."""
    ordered = spread_order(rollout_id, device_ids)
    targets = wave_targets(len(ordered), waves)
    out: dict[str, int] = {}
    start = 0
    for index, end in enumerate(targets):
        for device_id in ordered[start:end]:
            out[device_id] = index
        start = end
    return out


@dataclass(frozen=True)
class WaveCounts:
    """How many devices of one wave are in each state."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0

    @classmethod
    def of(cls, states: Iterable[DeviceRolloutState]) -> WaveCounts:
        """Tally a wave's device states (canceled devices do not count)."""
        total = succeeded = failed = pending = 0
        for s in states:
            if s is DeviceRolloutState.CANCELED:
                continue
            total += 1
            if s is DeviceRolloutState.SUCCEEDED:
                succeeded += 1
            elif s in FAILED_STATES:
                failed += 1
            else:
                pending += 1
        return cls(total, succeeded, failed, pending)


Decision = Literal["wait", "advance", "await_approval", "pause", "abort", "complete"]


def decide(
    strategy: Strategy, current_wave: int, waves: Sequence[WaveCounts], dispatched: WaveCounts
) -> Decision:
    """What the controller does next, given the counts of each wave and of all dispatched devices.

    Abort wins: once failures among dispatched devices exceed the failure threshold nothing else
    matters. A wave is done when nothing in it is pending; it passes when its success share
    meets the success threshold, and otherwise the rollout pauses for an operator to decide.
    """
    if dispatched.total and dispatched.failed / dispatched.total > strategy.failure_threshold:
        return "abort"
    if current_wave >= len(waves):
        return "complete"
    wave = waves[current_wave]
    if wave.pending:
        return "wait"
    if wave.total and wave.succeeded / wave.total < strategy.success_threshold:
        return "pause"
    if current_wave == len(waves) - 1:
        return "complete"
    return "await_approval" if strategy.require_approval else "advance"


_EVENT_STATES: dict[str, DeviceRolloutState] = {
    "active": DeviceRolloutState.SUCCEEDED,
    "failed": DeviceRolloutState.FAILED,
    "rolled_back": DeviceRolloutState.ROLLED_BACK,
}


def state_for_event(kind: EventKind) -> tuple[DeviceRolloutState, str]:
    """A device's rollout state and sub-status after one of its events."""
    state = _EVENT_STATES.get(kind, DeviceRolloutState.IN_PROGRESS)
    return state, kind


def event_applies(current: DeviceRolloutState, kind: EventKind) -> bool:
    """Events after a terminal state are ignored, except a device reporting it rolled back."""
    if current not in TERMINAL_STATES:
        return True
    return kind == "rolled_back" and current is DeviceRolloutState.SUCCEEDED
