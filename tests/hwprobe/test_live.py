"""Probe this machine for real, including the runtime engine libraries."""

from __future__ import annotations

import importlib.util
import platform
import sys
import types
from pathlib import Path

import pytest

from hwprobe import probe
from tests.hwprobe.roots import X86_CPUINFO, write_file


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="facts below describe an x86 host")
def test_this_machine() -> None:
    """This x86_64 build host (AVX-512, no GPU) is cpu-x86 and prefers llama.cpp."""
    profile = probe()
    assert profile.cpu.arch == "x86_64"
    assert profile.cpu.cores is not None and profile.cpu.cores >= 1
    flags = _cpuinfo_flags()
    for feature in ("avx2", "avx512f", "avx512_vnni"):
        assert (feature in profile.cpu.features) == (feature in flags)
    assert profile.memory.total_bytes is not None and profile.memory.total_bytes > 0
    assert profile.memory.available_bytes is not None
    assert profile.memory.available_bytes <= profile.memory.total_bytes
    if not profile.accelerators:
        assert profile.device_class == "cpu-x86"
        assert profile.engines[0] == "llamacpp"


def test_runtime_engines_on_this_machine() -> None:
    """Installed engines are found and queried; missing ones say installed=false."""
    profile = probe(Path("/"))
    assert profile.runtime is not None
    engines = profile.runtime.engines
    assert set(engines) == {"llamacpp", "openvino", "onnxruntime", "tensorrt"}
    for name, module in (
        ("llamacpp", "llama_cpp"),
        ("openvino", "openvino"),
        ("onnxruntime", "onnxruntime"),
        ("tensorrt", "tensorrt"),
    ):
        assert engines[name].installed == (importlib.util.find_spec(module) is not None)
    if engines["onnxruntime"].installed:
        assert "CPUExecutionProvider" in (engines["onnxruntime"].providers or [])
    if engines["openvino"].installed:
        assert "CPU" in (engines["openvino"].devices or [])
    assert probe(Path("/"), runtime=False).runtime is None


def test_broken_engine_library_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensorrt whose native library is missing fails to import: a warning, not a crash."""
    write_file(
        tmp_path,
        "libs/tensorrt/__init__.py",
        "raise OSError('libnvinfer.so.10: cannot open shared object file')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "libs"))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    root = tmp_path / "root"
    write_file(root, "proc/cpuinfo", X86_CPUINFO)
    profile = probe(root, runtime=True)
    assert profile.runtime is not None
    trt = profile.runtime.engines["tensorrt"]
    assert not trt.installed
    assert trt.error is not None and "libnvinfer" in trt.error
    assert any("tensorrt is installed but failed to import" in w for w in profile.warnings)


def test_nvml_names_and_sizes_nvidia_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here, so a stand-in pynvml module answers the NVML calls hwprobe makes."""
    nvml = types.ModuleType("pynvml")
    handle = object()
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: handle  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetPciInfo = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(busId=b"00000000:01:00.0")
    )
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA L4"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(total=24 << 30)
    )
    nvml.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    root = tmp_path / "root"
    write_file(root, "proc/cpuinfo", X86_CPUINFO)
    folder = "sys/bus/pci/devices/0000:01:00.0"
    write_file(root, f"{folder}/vendor", "0x10de\n")
    write_file(root, f"{folder}/class", "0x030200\n")
    write_file(
        root,
        "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 2024\n",
    )
    profile = probe(root, runtime=True)
    gpu = profile.accelerators[0]
    assert (gpu.kind, gpu.name, gpu.memory_bytes) == ("nvidia-gpu", "NVIDIA L4", 24 << 30)
    assert profile.runtime is not None
    assert profile.runtime.cuda_version == "12.4"
    assert profile.runtime.nvidia_driver_version == "550.54.15"
