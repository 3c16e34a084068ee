"""Control plane: device and model registry, rollouts, telemetry, dashboard."""
