"""Telemetry from a batching engine: running, batch size, KV use, prefix hits, queue time."""

from __future__ import annotations

from agent.engines.scheduling import SchedulerStats
from agent.fleet.telemetry import TelemetrySampler
from agent.server.metrics import ServingMetrics
from models.protocol import TelemetrySample


def _stats(hits: int) -> SchedulerStats:
    return SchedulerStats(
        slots=8,
        running=3,
        waiting=1,
        batch_tokens=40,
        batch_sequences=3,
        kv_usage=0.25,
        prompt_tokens=500,
        prefix_hit_tokens=hits,
        cached_prefixes=2,
        steps=10,
    )


def test_a_window_reports_the_scheduler_and_its_own_prefix_hits_and_queue_time() -> None:
    metrics = ServingMetrics()
    sampler = TelemetrySampler(metrics)
    metrics.on_queued(0.1)
    metrics.on_queued(0.3)
    first = sampler.sample(queue_depth=1, batch=_stats(hits=120))
    second = sampler.sample(queue_depth=1, batch=_stats(hits=200))

    assert (first.num_requests_running, first.batch_size, first.kv_cache_usage) == (3, 3, 0.25)
    assert first.queue_time_ms == 200.0 and second.queue_time_ms is None
    assert (first.prefix_cache_hit_tokens, second.prefix_cache_hit_tokens) == (120, 80)
    # the protocol's bounds accept what the agent sends
    TelemetrySample.model_validate(first.model_dump())


def test_without_a_batching_engine_the_fields_stay_empty() -> None:
    sample = TelemetrySampler(ServingMetrics()).sample()
    assert sample.num_requests_running is None and sample.kv_cache_usage is None
