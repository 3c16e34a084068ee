"""The pure rules of a soak: a device's telemetry after a switch against its own baseline.

A wave's devices soak once they report `active`: the controller compares what each device
reports after its switch (decode tok/s, TTFT p95, error rate) with what the same device
reported on its previous model, and fails the device when it regressed beyond the rollout's
bounds. Nothing here touches the database, so every rule is tested on plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, Field, StrictFloat, StrictInt

MAX_SOAK_S = 7 * 86400.0
DEFAULT_BASELINE_S = 3600.0  # telemetry before the dispatch that counts as the baseline


class HealthBounds(BaseModel):
    """How far a device may fall behind its own baseline during the soak."""

    max_tps_drop: StrictFloat = Field(
        default=0.2, ge=0, le=1, description="largest share of decode tok/s that may be lost"
    )
    max_ttft_rise: StrictFloat = Field(
        default=0.5, ge=0, le=100, description="largest relative rise of TTFT p95 (0.5 = +50%)"
    )
    max_error_rate_rise: StrictFloat = Field(
        default=0.05, ge=0, le=1, description="largest rise of errors per request (absolute)"
    )
    min_samples: StrictInt = Field(
        default=3, ge=1, le=10_000, description="samples with a value needed to judge a metric"
    )
    baseline_s: StrictFloat = Field(
        default=DEFAULT_BASELINE_S,
        gt=0,
        le=MAX_SOAK_S,
        description="how far before the dispatch the baseline reaches",
    )


@dataclass(frozen=True)
class HealthWindow:
    """What a device reported over one window: means, a p95 and an error rate."""

    samples: int = 0
    tps_samples: int = 0
    tokens_per_s: float | None = None
    ttft_samples: int = 0
    ttft_p95_ms: float | None = None
    requests: int = 0
    error_rate: float | None = None

    @classmethod
    def of(cls, rows: Iterable[tuple[float | None, float | None, int, int]]) -> HealthWindow:
        """Summarise (tokens_per_s, ttft_ms, requests, errors) samples."""
        tps: list[float] = []
        ttft: list[float] = []
        samples = requests = errors = 0
        for tokens_per_s, ttft_ms, n_requests, n_errors in rows:
            samples += 1
            if tokens_per_s is not None:
                tps.append(tokens_per_s)
            if ttft_ms is not None:
                ttft.append(ttft_ms)
            requests += n_requests
            errors += n_errors
        return cls(
            samples=samples,
            tps_samples=len(tps),
            tokens_per_s=sum(tps) / len(tps) if tps else None,
            ttft_samples=len(ttft),
            ttft_p95_ms=p95(ttft),
            requests=requests,
            error_rate=min(1.0, errors / requests) if requests else None,
        )

    def describe(self) -> str:
        """`tok/s 41.2, TTFT p95 80 ms, errors 0%` (what is known)."""
        parts = []
        if self.tokens_per_s is not None:
            parts.append(f"tok/s {self.tokens_per_s:.1f}")
        if self.ttft_p95_ms is not None:
            parts.append(f"TTFT p95 {self.ttft_p95_ms:.0f} ms")
        if self.error_rate is not None:
            parts.append(f"errors {self.error_rate:.0%}")
        return ", ".join(parts) or "no serving telemetry"


def p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def regression(baseline: HealthWindow, after: HealthWindow, bounds: HealthBounds) -> str | None:
    """Why `after` is worse than `baseline` beyond `bounds`, or None when it is not.

    A metric is judged only once `after` has `min_samples` values of it; the baseline needs
    them too, except the error rate, which without a baseline is judged against zero.
    """
    enough = bounds.min_samples
    if (
        after.tps_samples >= enough
        and baseline.tps_samples >= enough
        and baseline.tokens_per_s
        and after.tokens_per_s is not None
    ):
        floor = baseline.tokens_per_s * (1 - bounds.max_tps_drop)
        if after.tokens_per_s < floor:
            return (
                f"decode {after.tokens_per_s:.1f} tok/s after the switch, "
                f"{baseline.tokens_per_s:.1f} before (more than "
                f"{bounds.max_tps_drop:.0%} slower)"
            )
    if (
        after.ttft_samples >= enough
        and baseline.ttft_samples >= enough
        and baseline.ttft_p95_ms
        and after.ttft_p95_ms is not None
    ):
        ceiling = baseline.ttft_p95_ms * (1 + bounds.max_ttft_rise)
        if after.ttft_p95_ms > ceiling:
            return (
                f"TTFT p95 {after.ttft_p95_ms:.0f} ms after the switch, "
                f"{baseline.ttft_p95_ms:.0f} ms before (more than "
                f"+{bounds.max_ttft_rise:.0%})"
            )
    if after.error_rate is not None and after.samples >= enough:
        before = baseline.error_rate or 0.0
        if after.error_rate > before + bounds.max_error_rate_rise:
            return (
                f"{after.error_rate:.0%} of requests failed after the switch, {before:.0%} before"
            )
    return None
