"""The HardwareProfile model: the JSON contract that other tools read (docs/hwprobe.md)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AcceleratorKind = Literal[
    "nvidia-jetson", "nvidia-gpu", "intel-igpu", "intel-dgpu", "intel-npu", "amd-gpu", "other"
]
DeviceClass = Literal["jetson", "nvidia-gpu", "intel-igpu", "intel-npu", "cpu-x86", "cpu-arm"]
EngineName = Literal["tensorrt", "openvino", "llamacpp", "onnxruntime"]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CpuInfo(_Model):
    """What /proc/cpuinfo (and, on the live system, the running Python) says about the CPU."""

    arch: str | None = Field(None, description="x86_64, i686, aarch64, armv7l, armv6l or null")
    model: str | None = Field(None, description="marketing name or ARM core names")
    cores: int | None = Field(None, description="logical CPUs listed in /proc/cpuinfo")
    features: list[str] = Field(default_factory=list, description="inference-relevant flags")


class MemoryInfo(_Model):
    """System memory, already capped by a cgroup limit when one applies."""

    total_bytes: int | None = None
    available_bytes: int | None = None


class BoardInfo(_Model):
    """Who made the board and what it is called."""

    vendor: str | None = None
    model: str | None = None


class JetsonInfo(_Model):
    """An NVIDIA Jetson (Tegra SoC); every field may be null when the evidence is missing."""

    model: str | None = None
    soc: str | None = Field(None, description="tegra210, tegra186, tegra194, tegra234, tegra264")
    l4t: str | None = Field(None, description="L4T release as major.minor.patch, e.g. 35.3.1")
    jetpack: str | None = Field(None, description="JetPack release derived from the L4T release")


class Accelerator(_Model):
    """One device that can run inference besides the CPU."""

    kind: AcceleratorKind
    name: str
    memory_bytes: int | None = Field(None, description="dedicated or, if shared, system memory")
    driver: str | None = None
    pci_address: str | None = None


class EngineRuntime(_Model):
    """Whether one inference engine imports on this machine, and what it can see."""

    installed: bool
    version: str | None = None
    devices: list[str] | None = Field(None, description="OpenVINO devices, llama.cpp cpu/gpu")
    providers: list[str] | None = Field(None, description="ONNX Runtime execution providers")
    error: str | None = Field(None, description="why the import or query failed")


class RuntimeInfo(_Model):
    """Software facts only the live system can tell (null when probing a fake root)."""

    engines: dict[str, EngineRuntime] = Field(default_factory=dict)
    cuda_version: str | None = None
    nvidia_driver_version: str | None = None


class HardwareProfile(_Model):
    """Everything hwprobe learned about one device."""

    schema_version: int = SCHEMA_VERSION
    cpu: CpuInfo = Field(default_factory=CpuInfo)
    memory: MemoryInfo = Field(default_factory=MemoryInfo)
    board: BoardInfo = Field(default_factory=BoardInfo)
    jetson: JetsonInfo | None = None
    accelerators: list[Accelerator] = Field(default_factory=list)
    device_class: DeviceClass
    engines: list[EngineName] = Field(description="static engine preference, best first")
    warnings: list[str] = Field(default_factory=list)
    runtime: RuntimeInfo | None = None

    def digest(self) -> str:
        """Short sha256 of the canonical JSON, leaving out fields that change from run to run."""
        data = self.model_dump(
            mode="json", exclude={"warnings": True, "memory": {"available_bytes"}}
        )
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
