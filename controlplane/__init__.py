"""Control plane: device and model registry, rollouts, telemetry, dashboard."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgefleet")  # pyproject.toml is where the number is written
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
