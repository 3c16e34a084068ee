"""llama.cpp on the real SmolLM2 GGUF: the device it reports is the one it uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.engines.base import LoadOptions, SamplingParams, TokenChunk
from agent.engines.llamacpp import LlamaCppEngine
from agent.runtime import ModelRuntime

llama_cpp = pytest.importorskip("llama_cpp")
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=1.0)


def _offloads() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


@pytest.mark.skipif(_offloads(), reason="this llama.cpp build offloads to a GPU")
def test_a_build_without_gpu_offload_says_cpu_even_with_a_gpu_budget(smollm2_gguf: Path) -> None:
    engine = LlamaCppEngine()
    engine.load(smollm2_gguf, LoadOptions(context_length=512, threads=2, gpu_memory_bytes=24 << 30))
    stats = engine.stats()
    assert (stats.device, stats.extra["gpu_layers"], stats.extra["layers"]) == ("CPU", "0", "30")
    assert stats.extra["offload"] == "this llama.cpp build has no GPU offload"
    assert any(isinstance(i, TokenChunk) and i.text for i in engine.generate("Hi", GREEDY))
    engine.unload()


@pytest.mark.gpu
@pytest.mark.skipif(not _offloads(), reason="needs a llama.cpp build with GPU offload")
def test_all_layers_go_to_the_gpu_hwprobe_found(smollm2_gguf: Path) -> None:
    from agent.model_loading import probe_profile

    profile = probe_profile()
    kinds = {a.kind for a in profile.accelerators}
    if not kinds & {"nvidia-gpu", "nvidia-jetson"}:
        pytest.skip("hwprobe found no NVIDIA GPU")
    runtime = ModelRuntime()
    loaded = asyncio.run(runtime.load_model(smollm2_gguf, profile=profile, prefer="llamacpp"))
    try:
        stats = loaded.engine.stats()
        assert loaded.device == stats.device == "GPU"
        assert stats.extra["gpu_layers"] == stats.extra["layers"] == "30"
        assert "llamacpp on GPU" in loaded.explanation
        text = "".join(
            i.text
            for i in loaded.engine.generate("The capital of France is", GREEDY)
            if isinstance(i, TokenChunk)
        )
        assert "Paris" in text
    finally:
        runtime.unload()
