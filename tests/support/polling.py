"""The tests' one polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_S = 30.0
POLL_S = 0.02


def wait_until(
    check: Callable[[], T],
    what: str = "condition",
    timeout: float = WAIT_S,
    *,
    poll_s: float = POLL_S,
) -> T:
    """Poll `check` until it returns something truthy and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll_s)
