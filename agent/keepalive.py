"""Ollama's keep_alive: how long a model stays loaded after its last request."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable

FOREVER = math.inf
# Longer than this is forever: a timer cannot wait 1e308 s (its thread dies of OverflowError,
# and the model would never unload) and /api/ps cannot show a date that far out.
KEEP_ALIVE_MAX_S = 100 * 365 * 24 * 3600.0
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: str | float | None) -> float:
    """Seconds to keep a model loaded: Ollama's '5m', '1h30m', 300, 0 (now) or -1 (forever).

    Negative and huge values (over KEEP_ALIVE_MAX_S) mean forever; NaN is refused.
    """
    if value is None:
        raise ValueError("keep_alive is missing")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"keep_alive {value!r} is not a duration; use e.g. '5m', '1h', '30s', 0 or -1"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if math.isnan(seconds):
        raise ValueError(f"keep_alive {value!r} is not a number of seconds")
    return FOREVER if seconds < 0 or seconds > KEEP_ALIVE_MAX_S else seconds


class ExpiryTimer:
    """The pending keep_alive unload: a daemon timer and the wall-clock time it fires."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self.expires_at: float | None = None  # time.time() seconds, as /api/ps shows it

    def cancel(self) -> None:
        """Drop the pending expiry, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.expires_at = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> None:
        """Call `callback` from a timer thread in `seconds`, replacing any pending expiry."""
        self.cancel()
        seconds = min(seconds, KEEP_ALIVE_MAX_S)  # a longer wait overflows the timer thread
        self.expires_at = time.time() + seconds
        timer = threading.Timer(seconds, callback)
        timer.daemon = True
        self._timer = timer
        timer.start()
