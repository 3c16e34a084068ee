"""What one device may send the control plane, and the token buckets that measure it.

Every enrolled device may be hostile: with valid credentials one device could publish
schema-valid telemetry as fast as the broker takes it and bury everyone else's messages
(bench/device_flood.py: 5 % of 20 honest devices' samples stored during a 20 s flood, before
this budget). So each device has a budget of messages and bytes, all of its topics together:
a burst, then a steady rate. The agent paces its outbox to half of it (a restarted agent
starts with a full burst while the control plane's bucket may not be); the control plane
drops what goes past it, unparsed, and counts it against the device (`throttled`).

An agent sends a telemetry message (about 350 bytes) every 10 s by default, one a second at
its fastest setting. Half the burst (2,500 messages, 2 MiB) sends the last 7 hours of
telemetry kept offline at once; the rest follows at 2.5 messages (8 KiB) a second, so a day's
outage is caught up within 45 minutes, nothing lost. A flooding device gets its burst (about
25 batches of 1,000 samples) and then 16 KiB a second, about 100 samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Budget:
    """A sender's allowance: `burst_*` at once, refilled at `*_per_s`."""

    burst_messages: float
    messages_per_s: float
    burst_bytes: float
    bytes_per_s: float

    def scaled(self, factor: float) -> Budget:
        """The same budget, every figure times `factor`."""
        return Budget(
            self.burst_messages * factor,
            self.messages_per_s * factor,
            self.burst_bytes * factor,
            self.bytes_per_s * factor,
        )


DEVICE_BUDGET: Final = Budget(
    burst_messages=5_000, messages_per_s=5.0, burst_bytes=4 * 2**20, bytes_per_s=16 * 2**10
)
AGENT_PACE: Final = DEVICE_BUDGET.scaled(0.5)  # what the agent's outbox lets out


class TokenBucket:
    """Holds up to `burst` tokens, refilled at `per_s`; the caller passes the clock."""

    def __init__(self, burst: float, per_s: float, now: float) -> None:
        self.burst, self.per_s = burst, per_s
        self.tokens, self.updated = burst, now

    def wait_s(self, amount: float, now: float) -> float:
        """0 when `amount` tokens are there now (none taken), else seconds until they are."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_s)
        self.updated = now
        if self.tokens >= amount:
            return 0.0
        return (amount - self.tokens) / self.per_s if self.per_s > 0 else float("inf")

    def take(self, amount: float) -> None:
        """Spend `amount` tokens (after `wait_s` said 0)."""
        self.tokens -= amount

    def is_full(self, now: float) -> bool:
        """Whether the bucket would be full now (an idle sender, safe to forget)."""
        return self.tokens + (now - self.updated) * self.per_s >= self.burst


class Allowance:
    """One sender's message and byte buckets under `budget`."""

    def __init__(self, budget: Budget, now: float) -> None:
        self._messages = TokenBucket(budget.burst_messages, budget.messages_per_s, now)
        self._bytes = TokenBucket(budget.burst_bytes, budget.bytes_per_s, now)

    def spend(self, size: int, now: float) -> float:
        """0 when a message of `size` bytes fits now (and is spent), else seconds until it would."""
        wait = max(self._messages.wait_s(1, now), self._bytes.wait_s(size, now))
        if wait == 0:
            self._messages.take(1)
            self._bytes.take(size)
        return wait

    def is_full(self, now: float) -> bool:
        """Whether both buckets would be full now."""
        return self._messages.is_full(now) and self._bytes.is_full(now)


class Limiter:
    """An `Allowance` per sender key under one budget; thread-safe.

    A budget whose `messages_per_s` is 0 limits nothing. At most `max_senders` allowances are
    kept: past that, those of idle senders (full buckets) are forgotten first, else half.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        max_senders: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget, self.max_senders, self._clock = budget, max_senders, clock
        self._allowances: dict[str, Allowance] = {}
        self._lock = threading.Lock()

    def spend(self, key: str, size: int = 0) -> float:
        """0 when `key` may send `size` bytes now (and has spent them), else seconds to wait."""
        if self.budget.messages_per_s <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            allowance = self._allowances.get(key)
            if allowance is None:
                if len(self._allowances) >= self.max_senders:
                    self._forget_idle(now)
                allowance = self._allowances[key] = Allowance(self.budget, now)
            return allowance.spend(size, now)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, allowance in self._allowances.items() if allowance.is_full(now)]
        for key in idle or list(self._allowances)[: len(self._allowances) // 2]:
            del self._allowances[key]
