"""The EdgeFleet agent: engines, engine selection, local REST, MQTT, rollout executor."""

__version__ = "0.1.0"
