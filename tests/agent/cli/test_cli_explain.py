"""`edgefleet-agent explain FILE.gguf`: the device and template a bare GGUF would get here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.cli.run import _explain_gguf
from hwprobe.profile import HardwareProfile

GIB = 1 << 30


def _profile(*, gpu_gib: float | None, offload: bool) -> HardwareProfile:
    devices = ["cpu", "gpu"] if offload else ["cpu"]
    gpus: list[dict[str, Any]] = (
        []
        if gpu_gib is None
        else [{"kind": "nvidia-gpu", "name": "gpu", "memory_bytes": int(gpu_gib * GIB)}]
    )
    return HardwareProfile.model_validate(
        {
            "device_class": "nvidia-gpu" if gpus else "cpu-x86",
            "engines": ["llamacpp"],
            "accelerators": gpus,
            "runtime": {"engines": {"llamacpp": {"installed": True, "devices": devices}}},
        }
    )


def test_a_gpu_with_room_takes_every_layer(gemma3_gguf: Path) -> None:
    said = _explain_gguf(gemma3_gguf, _profile(gpu_gib=8, offload=True), 2048)
    assert "llamacpp on GPU (all 18 layers fit" in said
    assert "no chat template: chat uses a named fallback" in said


def test_a_small_gpu_takes_some_layers(gemma3_gguf: Path) -> None:
    # 14 MiB of weights + 2 MiB of KV per layer; 0.9 x 0.7 GiB - 512 MiB = 133 MiB of budget.
    said = _explain_gguf(gemma3_gguf, _profile(gpu_gib=0.7, offload=True), 2048)
    assert "llamacpp on GPU (" in said and "/18 layers)" in said


def test_cpu_without_offload_or_gpu(smollm2_gguf: Path) -> None:
    no_build = _explain_gguf(smollm2_gguf, _profile(gpu_gib=8, offload=False), 2048)
    assert "llamacpp on CPU (this llama.cpp build has no GPU offload)" in no_build
    assert no_build.endswith("its own chat template")
    no_gpu = _explain_gguf(smollm2_gguf, _profile(gpu_gib=None, offload=True), 2048)
    assert "on CPU (hwprobe found no GPU llama.cpp can use)" in no_gpu
