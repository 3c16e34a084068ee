"""Fleet mode's samples (outbox, MQTT) on the agent's /metrics."""

from __future__ import annotations

from agent.runtime import ModelRuntime
from agent.server.metrics import ServingMetrics


def test_extra_samples_are_rendered_with_help_and_type() -> None:
    metrics = ServingMetrics()
    metrics.extra = lambda: [("outbox_dropped_total", "counter", "Dropped telemetry.", 3)]
    text = metrics.render(ModelRuntime())
    assert "# TYPE edgefleet_agent_outbox_dropped_total counter" in text
    assert "\nedgefleet_agent_outbox_dropped_total 3\n" in text
