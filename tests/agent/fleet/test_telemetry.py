"""The agent's telemetry samples: serving rates over each window, None when idle."""

from __future__ import annotations

from agent.engines.base import Completion
from agent.fleet.telemetry import TelemetrySampler
from agent.server.metrics import ServingMetrics


def test_a_window_reports_its_own_decode_rate_ttft_requests_and_errors() -> None:
    metrics = ServingMetrics()
    metrics.on_first_token(0.5)  # before the sampler: not part of its first window
    sampler = TelemetrySampler(metrics)

    metrics.on_first_token(0.02)
    metrics.on_first_token(0.04)
    for _ in range(10):
        metrics.on_token_gap(0.005)
    metrics.on_finish(Completion("length", prompt_tokens=4, completion_tokens=11))
    metrics.count_request("openai", 200)
    metrics.count_request("ollama", 200)
    metrics.count_request("openai", 503)
    sample = sampler.sample(queue_depth=3)

    assert sample.tokens_per_s == 200.0
    assert sample.ttft_ms == 30.0
    assert sample.requests == 3 and sample.errors == 1
    assert sample.queue_depth == 3
    assert sample.mem_used_bytes is not None and sample.mem_used_bytes > 0

    idle = sampler.sample()
    assert idle.tokens_per_s is None and idle.ttft_ms is None
    assert idle.requests == 0 and idle.errors == 0


def test_without_serving_metrics_only_the_host_is_reported() -> None:
    sample = TelemetrySampler(None).sample()
    assert sample.tokens_per_s is None and sample.requests == 0
    assert sample.cpu_percent is not None
