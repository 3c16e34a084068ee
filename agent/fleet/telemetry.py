"""What the agent reports on `telemetry`: serving rates over the last window plus host load."""

from __future__ import annotations

import psutil

from agent.engines.scheduling import SchedulerStats
from agent.server.metrics import ServingMetrics, ServingTotals
from models.protocol import TelemetrySample

_INT32_MAX = 2**31 - 1


class TelemetrySampler:
    """Turns the serving counters' change since the last call into one TelemetrySample."""

    def __init__(self, metrics: ServingMetrics | None) -> None:
        self.metrics = metrics
        self._last = metrics.totals() if metrics is not None else ServingTotals()
        self._last_hits: int | None = None
        psutil.cpu_percent(interval=None)  # primes the counter: the first real call has a base

    def sample(self, queue_depth: int = 0, batch: SchedulerStats | None = None) -> TelemetrySample:
        """Decode tokens/s and mean TTFT of the window (None when idle), requests, errors, host.

        With `batch` (a batching engine's scheduler), also running sequences, the last batch
        size, KV cache use, prefix-cache hit tokens and mean queue time of the window.
        """
        now = self.metrics.totals() if self.metrics is not None else ServingTotals()
        before, self._last = self._last, now
        gaps = now.token_gaps - before.token_gaps
        gap_s = now.token_gap_seconds - before.token_gap_seconds
        firsts = now.first_tokens - before.first_tokens
        first_s = now.first_token_seconds - before.first_token_seconds
        queued = now.queued - before.queued
        queue_s = now.queue_seconds - before.queue_seconds
        hits = None
        if batch is not None:
            last, self._last_hits = self._last_hits, batch.prefix_hit_tokens
            hits = min(_INT32_MAX, max(0, batch.prefix_hit_tokens - (last or 0)))
        return TelemetrySample(
            tokens_per_s=round(gaps / gap_s, 2) if gaps and gap_s > 0 else None,
            ttft_ms=round(1000 * first_s / firsts, 2) if firsts else None,
            requests=max(0, now.requests - before.requests),
            errors=max(0, now.server_errors - before.server_errors),
            queue_depth=queue_depth,
            cpu_percent=psutil.cpu_percent(interval=None),
            mem_used_bytes=int(psutil.virtual_memory().used),
            temperature_c=hottest_sensor_c(),
            num_requests_running=min(_INT32_MAX, batch.running) if batch else None,
            batch_size=min(_INT32_MAX, batch.batch_sequences) if batch else None,
            kv_cache_usage=round(min(1.0, max(0.0, batch.kv_usage)), 4) if batch else None,
            prefix_cache_hit_tokens=hits,
            queue_time_ms=round(1000 * queue_s / queued, 2) if queued else None,
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
