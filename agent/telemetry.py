"""What the agent reports on `telemetry`: serving rates over the last window plus host load."""

from __future__ import annotations

import psutil

from agent.server.metrics import ServingMetrics, ServingTotals
from models.protocol import TelemetrySample


class TelemetrySampler:
    """Turns the serving counters' change since the last call into one TelemetrySample."""

    def __init__(self, metrics: ServingMetrics | None) -> None:
        self.metrics = metrics
        self._last = metrics.totals() if metrics is not None else ServingTotals()
        psutil.cpu_percent(interval=None)  # primes the counter: the first real call has a base

    def sample(self, queue_depth: int = 0) -> TelemetrySample:
        """Decode tokens/s and mean TTFT of the window (None when idle), requests, errors, host."""
        now = self.metrics.totals() if self.metrics is not None else ServingTotals()
        before, self._last = self._last, now
        gaps = now.token_gaps - before.token_gaps
        gap_s = now.token_gap_seconds - before.token_gap_seconds
        firsts = now.first_tokens - before.first_tokens
        first_s = now.first_token_seconds - before.first_token_seconds
        return TelemetrySample(
            tokens_per_s=round(gaps / gap_s, 2) if gaps and gap_s > 0 else None,
            ttft_ms=round(1000 * first_s / firsts, 2) if firsts else None,
            requests=max(0, now.requests - before.requests),
            errors=max(0, now.server_errors - before.server_errors),
            queue_depth=queue_depth,
            cpu_percent=psutil.cpu_percent(interval=None),
            mem_used_bytes=int(psutil.virtual_memory().used),
            temperature_c=hottest_sensor_c(),
        )


def hottest_sensor_c() -> float | None:
    """The hottest temperature sensor (Jetson thermal zones, CPU packages), if any."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except (OSError, RuntimeError):
        return None
    readings = [t.current for group in sensors.values() for t in group if t.current]
    return round(max(readings), 1) if readings else None
