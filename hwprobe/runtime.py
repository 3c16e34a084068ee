"""Live-system software facts: which engines import, what they see, CUDA and driver versions.

Only called when probing the running system; every import is guarded so that a broken
library becomes a warning, never a crash.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from types import ModuleType

from hwprobe.profile import Accelerator, EngineRuntime, RuntimeInfo
from hwprobe.rootfs import RootFS

_LOGGER = logging.getLogger(__name__)
_DRIVER_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")
_CUDA_TXT = re.compile(r"CUDA Version\s+(\d+(?:\.\d+)+)")


def _version(module: ModuleType) -> str | None:
    value = getattr(module, "__version__", None)
    return str(value) if value is not None else None


def _llamacpp(module: ModuleType) -> EngineRuntime:
    devices = ["cpu"]
    if bool(module.llama_supports_gpu_offload()):
        devices.append("gpu")
    return EngineRuntime(installed=True, version=_version(module), devices=devices)


def _openvino(module: ModuleType) -> EngineRuntime:
    devices = [str(d) for d in module.Core().available_devices]
    version = _version(module) or str(module.get_version())
    return EngineRuntime(installed=True, version=version, devices=devices)


def _onnxruntime(module: ModuleType) -> EngineRuntime:
    providers = [str(p) for p in module.get_available_providers()]
    return EngineRuntime(installed=True, version=_version(module), providers=providers)


def _tensorrt(module: ModuleType) -> EngineRuntime:
    return EngineRuntime(installed=True, version=_version(module))


# engine name -> (module to import, how to query it once imported)
_ENGINES: dict[str, tuple[str, Callable[[ModuleType], EngineRuntime]]] = {
    "llamacpp": ("llama_cpp", _llamacpp),
    "openvino": ("openvino", _openvino),
    "onnxruntime": ("onnxruntime", _onnxruntime),
    "tensorrt": ("tensorrt", _tensorrt),
}


def probe_engine(fs: RootFS, name: str) -> EngineRuntime:
    """Import one engine's library and ask what it supports; failures are recorded, not raised."""
    module_name, query = _ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return EngineRuntime(installed=False)
    except Exception as exc:  # a broken native library must not stop the probe
        fs.warn(f"{module_name} is installed but failed to import: {exc}")
        return EngineRuntime(installed=False, error=f"import failed: {exc}")
    try:
        return query(module)
    except Exception as exc:
        fs.warn(f"{module_name} imported but could not be queried: {exc}")
        return EngineRuntime(installed=True, version=_version(module), error=str(exc))


def _cuda_toolkit_version(fs: RootFS) -> str | None:
    text = fs.read_text("usr/local/cuda/version.json")
    if text is not None:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            fs.warn("usr/local/cuda/version.json: no cuda.version entry")
    match = _CUDA_TXT.search(fs.read_text("usr/local/cuda/version.txt") or "")
    return match.group(1) if match else None


def _nvml(fs: RootFS) -> tuple[dict[str, tuple[str, int]], str | None]:
    """GPU names and memory by PCI address, and the driver's CUDA version, via pynvml."""
    try:
        nvml = importlib.import_module("pynvml")
    except ModuleNotFoundError:
        return {}, None
    except Exception as exc:
        fs.warn(f"pynvml failed to import: {exc}")
        return {}, None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        _LOGGER.debug("NVML not available: %s", exc)
        return {}, None
    try:
        gpus: dict[str, tuple[str, int]] = {}
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            bus_id = nvml.nvmlDeviceGetPciInfo(handle).busId
            bus = bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)
            name = nvml.nvmlDeviceGetName(handle)
            gpus[normalise_pci(bus)] = (
                name.decode() if isinstance(name, bytes) else str(name),
                int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            )
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        return gpus, f"{cuda // 1000}.{cuda % 1000 // 10}"
    except Exception as exc:
        fs.warn(f"NVML query failed: {exc}")
        return {}, None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            _LOGGER.debug("nvmlShutdown failed: %s", exc)


def normalise_pci(address: str) -> str:
    """'00000000:01:00.0' (NVML) and '0000:01:00.0' (sysfs) -> '0000:01:00.0'."""
    domain, _, rest = address.lower().partition(":")
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return address.lower()


def probe_runtime(fs: RootFS, accelerators: list[Accelerator]) -> RuntimeInfo:
    """Engines, CUDA and driver versions; fills NVIDIA GPU names and memory from NVML."""
    engines = {name: probe_engine(fs, name) for name in _ENGINES}
    gpus, driver_cuda = _nvml(fs)
    for accelerator in accelerators:
        known = gpus.get(normalise_pci(accelerator.pci_address or ""))
        if accelerator.kind == "nvidia-gpu" and known is not None:
            accelerator.name, accelerator.memory_bytes = known
    driver = _DRIVER_VERSION.search(fs.read_text("proc/driver/nvidia/version") or "")
    return RuntimeInfo(
        engines=engines,
        cuda_version=_cuda_toolkit_version(fs) or driver_cuda,
        nvidia_driver_version=driver.group(1) if driver else None,
    )
