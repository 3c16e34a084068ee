"""hwprobe: read a device's hardware into a HardwareProfile and say which engines suit it."""

from __future__ import annotations

from hwprobe.classify import preferred_engines
from hwprobe.errors import ProbeError
from hwprobe.probe import probe
from hwprobe.profile import (
    Accelerator,
    BoardInfo,
    CpuInfo,
    EngineRuntime,
    HardwareProfile,
    JetsonInfo,
    MemoryInfo,
    RuntimeInfo,
)

__all__ = [
    "Accelerator",
    "BoardInfo",
    "CpuInfo",
    "EngineRuntime",
    "HardwareProfile",
    "JetsonInfo",
    "MemoryInfo",
    "ProbeError",
    "RuntimeInfo",
    "preferred_engines",
    "probe",
]
