"""Per-client token buckets for endpoints anyone can call (`/enroll`): models.budget's."""

from __future__ import annotations

import math

from fastapi import Request

from controlplane.errors import ApiError
from models.budget import Budget, Limiter

ENROLL_BURST = 20  # enrollments one client address may make at once, then
# Settings.enroll_rate_per_minute (30 by default) a minute
MAX_CLIENTS = 10_000  # buckets kept; full (idle) ones are forgotten first


def enrollment_limiter(per_minute: float) -> Limiter:
    """`ENROLL_BURST` enrollments at once per client address, then `per_minute` (0: no limit)."""
    return Limiter(
        Budget(
            burst_messages=ENROLL_BURST,
            messages_per_s=per_minute / 60.0,
            burst_bytes=0,
            bytes_per_s=0,
        ),
        max_senders=MAX_CLIENTS,
    )


async def limit_enrollment(request: Request) -> None:
    """Dependency: 429 with Retry-After when this client address enrolls too often."""
    limiter: Limiter = request.app.state.enroll_limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.spend(client)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "too_many_requests",
            f"too many enrollments from {client}; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )
