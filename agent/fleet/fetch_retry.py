"""Retrying the fetches of a rollout while the control plane restarts or the network drops.

A fetch that fails for a reason that may pass (connection refused or dropped, a 5xx, a short
body) is tried again with exponential backoff until the rollout's retry window closes; a
download resumes from its partial file. Anything else (404, bad signature, sha256 mismatch)
fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from agent.errors import AgentError
from agent.fleet.rollout_events import RolloutFailed
from models.errors import DownloadError

_LOGGER = logging.getLogger(__name__)

# The control plane gives a device 900 s by default (strategy.device_timeout_s); retries stop
# well inside that, so the device still reports why it failed before the rollout times it out.
FETCH_RETRY_WINDOW_S = 600.0
FETCH_BACKOFF_S = 1.0
FETCH_BACKOFF_MAX_S = 30.0

T = TypeVar("T")


class FetchUnavailable(AgentError):
    """A fetch failed in a way that may pass: worth another try."""


@dataclass
class RetryWindow:
    """The time one rollout may spend retrying its fetches, shared by all of them."""

    window_s: float = field(default_factory=lambda: FETCH_RETRY_WINDOW_S)
    backoff_s: float = field(default_factory=lambda: FETCH_BACKOFF_S)
    backoff_max_s: float = field(default_factory=lambda: FETCH_BACKOFF_MAX_S)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.window_s

    def run(self, what: str, fetch: Callable[[], T]) -> T:
        """`fetch()`, tried again after transient failures until the window closes."""
        attempt, delay = 1, self.backoff_s
        while True:
            try:
                return fetch()
            except FetchUnavailable as exc:
                reason = str(exc)
            except DownloadError as exc:
                if not exc.transient:
                    raise
                reason = exc.reason
            left = self.deadline - self.clock()
            if left <= 0:
                raise RolloutFailed(
                    f"{what}: gave up after {attempt} attempts in {self.window_s:g} s: {reason}"
                )
            wait = min(delay, left)
            _LOGGER.warning(
                "%s failed (attempt %d): %s; retrying in %.1f s", what, attempt, reason, wait
            )
            self.sleep(wait)
            attempt, delay = attempt + 1, min(delay * 2, self.backoff_max_s)
