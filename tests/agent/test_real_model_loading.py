"""Built model directories of real GGUFs (`edgefleet-models build FILE.gguf`) on llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.engines.base import LoadOptions
from agent.model_loading import LoadedModel, open_model
from hwprobe.profile import HardwareProfile
from models.keys import generate_key

pytest.importorskip("llama_cpp")
gguf_import = pytest.importorskip("models.build.gguf_import")

CPU_ONLY = HardwareProfile(device_class="cpu-x86", engines=["llamacpp"])


def _open_built(gguf: Path, out: Path) -> LoadedModel:
    gguf_import.import_gguf(gguf, out, generate_key(), hardlink=True)
    return open_model(
        out,
        profile=CPU_ONLY,
        installed={"llamacpp": "test"},
        options=LoadOptions(context_length=512, threads=2),
    )


def test_a_built_instruct_model_uses_the_manifest_template(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    loaded = _open_built(smollm2_gguf, tmp_path / "smollm2")
    try:
        assert loaded.manifest is not None and loaded.chat.source == "manifest"
        assert loaded.chat_template == loaded.manifest.chat_template
        assert "<|im_end|>" in loaded.chat.stop_strings
        assert loaded.device == "CPU"
    finally:
        loaded.engine.unload()


def test_a_built_base_model_falls_back_by_name(gemma3_gguf: Path, tmp_path: Path) -> None:
    loaded = _open_built(gemma3_gguf, tmp_path / "gemma3")
    try:
        assert loaded.chat.label == "fallback: gemma"
        assert "<end_of_turn>" in loaded.chat.stop_strings
    finally:
        loaded.engine.unload()
