"""The control plane's own Prometheus metrics: request and DB-write latency, fleet gauges."""

from __future__ import annotations

from controlplane.metrics.exposition import install_metrics
from controlplane.metrics.recorders import ControlPlaneMetrics

__all__ = ["ControlPlaneMetrics", "install_metrics"]
