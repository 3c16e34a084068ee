"""Per-client token buckets for endpoints anyone can call (`/enroll`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from controlplane.errors import ApiError

ENROLL_BURST = 20  # enrollments one client address may make at once, then
# Settings.enroll_rate_per_minute (30 by default) a minute
MAX_CLIENTS = 10_000  # buckets kept; full (idle) ones are forgotten first


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Allows `burst` calls at once per key, refilled at `per_minute`; thread-safe."""

    def __init__(
        self, *, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.per_minute, self._clock = burst, per_minute, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when the call may go ahead (a token is taken), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_CLIENTS:
                    self._forget_idle(now, rate)
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def _forget_idle(self, now: float, rate: float) -> None:
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * rate >= self.burst
        ]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


async def limit_enrollment(request: Request) -> None:
    """Dependency: 429 with Retry-After when this client address enrolls too often."""
    limiter: TokenBucketLimiter = request.app.state.enroll_limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.take(client)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "too_many_requests",
            f"too many enrollments from {client}; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )
