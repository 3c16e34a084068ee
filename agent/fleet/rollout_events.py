"""What one attempt at a desired state reports: its events, and the error that ends it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.errors import AgentError
from models.protocol import DesiredModel, EventKind, RolloutEvent

PROGRESS_EVERY_BYTES = 8 << 20

EventSink = Callable[[RolloutEvent], None]


class RolloutFailed(AgentError):
    """One step of a rollout failed; `kind` is the event to report (failed or rolled_back)."""

    def __init__(self, reason: str, kind: EventKind = "failed") -> None:
        super().__init__(reason)
        self.kind: EventKind = kind


class RolloutReporter:
    """Emits the events of one desired version, with download progress throttled."""

    def __init__(self, emit: EventSink, version: int, target: DesiredModel) -> None:
        self._emit, self._version, self._target = emit, version, target
        self._last_progress = -PROGRESS_EVERY_BYTES

    def __call__(self, kind: EventKind, detail: str = "", **extra: Any) -> None:
        event = RolloutEvent(
            desired_version=self._version,
            rollout_id=self._target.rollout_id,
            model=f"{self._target.name}:{self._target.version}",
            kind=kind,
            detail=detail,
            **extra,
        )
        self._emit(event)

    def progress(self, done: int, total: int) -> None:
        """Report download progress at most every PROGRESS_EVERY_BYTES, and at the end."""
        if done - self._last_progress >= PROGRESS_EVERY_BYTES or done == total:
            self._last_progress = done
            self("downloading", bytes_done=done, bytes_total=total)
