"""Engine discovery, creation and the missing-library path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from agent.engines.base import Engine, LoadOptions
from agent.engines.llamacpp import LlamaCppEngine
from agent.engines.onnxrt import OnnxRuntimeEngine, choose_providers
from agent.engines.openvino import OpenVinoEngine
from agent.engines.registry import ENGINE_NAMES, create_engine, installed_engines
from agent.errors import EngineUnavailable, ModelLoadError


def test_installed_engines_match_importable_modules() -> None:
    found = installed_engines()
    modules = {"tensorrt": "tensorrt", "openvino": "openvino_genai", "llamacpp": "llama_cpp"}
    modules["onnxruntime"] = "onnxruntime"
    for name in ENGINE_NAMES:
        assert (name in found) == (importlib.util.find_spec(modules[name]) is not None)
    assert all(version for version in found.values())


def test_create_engine_gives_protocol_engines() -> None:
    for name in installed_engines():
        engine = create_engine(name)
        assert isinstance(engine, Engine) and engine.name == name


def test_create_engine_refuses_unknown_and_uninstalled(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineUnavailable, match="unknown engine 'vllm'"):
        create_engine("vllm")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'edgefleet\[onnx\]'"):
        create_engine("onnxruntime")


@pytest.mark.parametrize(
    ("engine", "module"),
    [
        (LlamaCppEngine, "llama_cpp"),
        (OpenVinoEngine, "openvino_genai"),
        (OnnxRuntimeEngine, "onnxruntime"),
    ],
)
def test_missing_library_raises_engine_unavailable(
    engine: type[Engine], module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(EngineUnavailable):
        engine().load(tmp_path, LoadOptions())


def test_bad_model_file_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf")
    if "llamacpp" in installed_engines():
        with pytest.raises(ModelLoadError):
            LlamaCppEngine().load(bad, LoadOptions())
    with pytest.raises(ModelLoadError, match="openvino_model.xml"):
        OpenVinoEngine().load(tmp_path, LoadOptions())


def test_provider_order() -> None:
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(available, "GPU") == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(available, "CPU") == ["CPUExecutionProvider"]
    assert choose_providers(["AzureExecutionProvider"], "CPU") == ["CPUExecutionProvider"]
