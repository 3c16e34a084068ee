"""Which engines exist, which are installed, and how to make one."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from typing import Any, get_args

from agent.engines.base import Engine
from agent.errors import EngineUnavailable
from hwprobe.profile import EngineName

ENGINE_NAMES: tuple[EngineName, ...] = get_args(EngineName)  # hwprobe.profile spells them

# engine -> (module that must be importable, distributions whose version we report)
_REQUIREMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-libs")),
    "openvino": ("openvino_genai", ("openvino-genai",)),
    "llamacpp": ("llama_cpp", ("llama-cpp-python", "llama_cpp_python")),
    "onnxruntime": (
        "onnxruntime",
        ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    ),
}


def _version(distributions: tuple[str, ...]) -> str:
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def installed_engines() -> dict[str, str]:
    """Engine name -> library version for each engine whose library is importable."""
    found: dict[str, str] = {}
    for name in ENGINE_NAMES:
        module, distributions = _REQUIREMENTS[name]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found[name] = _version(distributions)
    return found


def _factories() -> dict[str, Callable[[], Engine]]:
    # The engine modules import their libraries lazily, so importing them here is cheap.
    from agent.engines.llamacpp import LlamaCppEngine
    from agent.engines.onnxrt import OnnxRuntimeEngine
    from agent.engines.openvino import OpenVinoEngine
    from agent.engines.tensorrt import TensorRtEngine

    return {
        "tensorrt": TensorRtEngine,
        "openvino": OpenVinoEngine,
        "llamacpp": LlamaCppEngine,
        "onnxruntime": OnnxRuntimeEngine,
    }


def _unavailable(name: str) -> EngineUnavailable:
    module = _REQUIREMENTS[name][0]
    extra = "onnx" if name == "onnxruntime" else name
    return EngineUnavailable(
        f"engine {name} needs the Python module {module!r}: pip install 'edgefleet[{extra}]'"
    )


def import_runtime(name: str) -> Any:
    """The engine's library module; EngineUnavailable saying how to install it."""
    try:
        return importlib.import_module(_REQUIREMENTS[name][0])
    except ImportError as exc:
        raise _unavailable(name) from exc


def create_engine(name: str) -> Engine:
    """A new, unloaded engine by name; EngineUnavailable for unknown or uninstalled ones."""
    factory = _factories().get(name)
    if factory is None:
        known = ", ".join(ENGINE_NAMES)
        raise EngineUnavailable(f"unknown engine {name!r}; known engines: {known}")
    if name not in installed_engines():
        raise _unavailable(name)
    return factory()
