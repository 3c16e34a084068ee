"""open_model: the device an engine really uses, its GPU budget and the model's chat format."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.engines.base import LoadOptions, ModelChatInfo
from agent.engines.fake import FakeEngine
from agent.model_loading import open_model
from hwprobe.profile import HardwareProfile
from models.manifest import Manifest

GIB = 1 << 30
GPU_PROFILE: dict[str, Any] = {
    "device_class": "nvidia-gpu",
    "engines": ["tensorrt", "llamacpp"],
    "memory": {"total_bytes": 64 * GIB, "available_bytes": 64 * GIB},
    "accelerators": [{"kind": "nvidia-gpu", "name": "RTX", "memory_bytes": 8 * GIB}],
    "runtime": {"engines": {"llamacpp": {"installed": True, "devices": ["cpu", "gpu"]}}},
}
GPU = HardwareProfile.model_validate(GPU_PROFILE)


class OffloadingEngine(FakeEngine):
    """Records its load options; reports a partial offload when given a GPU budget."""

    name = "llamacpp"

    def __init__(self, info: ModelChatInfo | None = None) -> None:
        super().__init__()
        self.options: LoadOptions | None = None
        self.info = info or ModelChatInfo()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        super().load(model_path, options)
        self.options = options
        if options.gpu_memory_bytes:
            self._stats.device = "GPU (3/30 layers)"
            self._stats.extra = {"offload": "3 of 30 layers fit", "gpu_layers": "3"}
        else:
            self._stats.device = "CPU"

    def chat_info(self, candidates: Sequence[str]) -> ModelChatInfo:
        return self.info


def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "Base-Model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_bare_gguf_gets_the_gpu_budget_and_reports_the_real_device(tmp_path: Path) -> None:
    engine = OffloadingEngine()
    loaded = open_model(
        gguf_file(tmp_path),
        profile=GPU,
        installed={"llamacpp": "0.3"},
        engine_factory=lambda name: engine,
    )
    assert engine.options is not None and engine.options.gpu_memory_bytes == 8 * GIB
    assert loaded.device == "GPU (3/30 layers)"
    assert "llamacpp on GPU (3/30 layers) (3 of 30 layers fit)" in loaded.explanation


def test_no_gpu_means_no_budget_and_cpu(tmp_path: Path) -> None:
    engine = OffloadingEngine()
    cpu = HardwareProfile.model_validate(
        {**GPU_PROFILE, "device_class": "cpu-x86", "accelerators": []}
    )
    loaded = open_model(
        gguf_file(tmp_path),
        profile=cpu,
        installed={"llamacpp": "0.3"},
        engine_factory=lambda name: engine,
    )
    assert engine.options is not None and engine.options.gpu_memory_bytes is None
    assert loaded.device == "CPU"


def test_a_model_directory_reports_the_device_the_engine_chose(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    variant = {
        "id": "gguf-q4_0",
        "format": "gguf",
        "precision": "q4_0",
        "engines": ["llamacpp"],
        "files": [{"path": "model.gguf", "sha256": "0" * 64, "size": 1}],
        "memory_bytes": 1 << 20,
    }
    manifest = Manifest(
        name="m",
        version="1",
        architecture="llama",
        context_length=512,
        chat_template="",
        variants=[variant],
    )  # type: ignore[list-item]
    (folder / "manifest.json").write_text(manifest.model_dump_json())
    info = ModelChatInfo(
        eos_token="<eos>", specials=frozenset({"<start_of_turn>", "<end_of_turn>"})
    )
    engine = OffloadingEngine(info)
    loaded = open_model(
        folder, profile=GPU, installed={"llamacpp": "0.3"}, engine_factory=lambda name: engine
    )
    assert loaded.selection.device == "GPU" and loaded.device == "GPU (3/30 layers)"
    assert "llamacpp runs on GPU (3/30 layers)" in loaded.explanation
    assert loaded.chat.label == "fallback: gemma" and "<end_of_turn>" in loaded.chat.stop_strings


def test_a_gguf_without_a_template_falls_back_by_name_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = ModelChatInfo(
        bos_token="<bos>",
        eos_token="<eos>",
        end_of_turn=("<end_of_turn>",),
        specials=frozenset({"<start_of_turn>", "<end_of_turn>"}),
    )
    with caplog.at_level(logging.WARNING, logger="agent.model_loading"):
        loaded = open_model(
            gguf_file(tmp_path),
            profile=None,
            installed={},
            engine_factory=lambda name: OffloadingEngine(info),
        )
    assert loaded.chat.name == "gemma" and loaded.bos_token == "<bos>"
    assert "fallback template 'gemma'" in caplog.text and "base-model" in caplog.text
    assert "chat uses fallback template 'gemma'" in loaded.explanation


def test_the_gguf_template_wins_over_the_fallback(tmp_path: Path) -> None:
    own = "{% for m in messages %}<|user|>{{ m.content }}<|end|>{% endfor %}<|assistant|>"
    info = ModelChatInfo(template=own, eos_token="<|endoftext|>", end_of_turn=("<|end|>",))
    loaded = open_model(
        gguf_file(tmp_path),
        profile=None,
        installed={},
        engine_factory=lambda name: OffloadingEngine(info),
    )
    assert (loaded.chat.source, loaded.chat_template) == ("gguf", own)
    assert loaded.chat.stop_strings == ("<|end|>", "<|endoftext|>")
