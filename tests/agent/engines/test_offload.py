"""How many llama.cpp layers go to the GPU: decided from the GGUF header and the GPU budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.engines.offload import (
    GPU_MEMORY_UNKNOWN,
    GGUFHeaderError,
    ModelShape,
    OffloadPlan,
    model_shape,
    plan_offload,
)

MIB = 1 << 20
GIB = 1 << 30
# 30 layers of 100 MiB weights; KV 1,024 values per token per layer.
SHAPE = ModelShape("llama", n_layers=30, kv_width=1024, file_bytes=30 * 100 * MIB)


def plan(gpu: int | None, *, offload: bool = True, context: int = 2048) -> OffloadPlan:
    return plan_offload(
        SHAPE, context_length=context, supports_gpu_offload=offload, gpu_memory_bytes=gpu
    )


def test_everything_on_the_gpu_when_it_fits() -> None:
    full = plan(24 * GIB)
    assert (full.gpu_layers, full.device, full.n_gpu_layers) == (30, "GPU", -1)
    assert "all 30 layers fit" in full.reason


def test_part_of_the_model_when_the_budget_is_short() -> None:
    # Each layer: 100 MiB weights + 2048 x 1024 x 2 bytes = 4 MiB of KV.
    budget = int((10 * 104 * MIB + 512 * MIB) / 0.9) + 1
    partial = plan(budget)
    assert (partial.gpu_layers, partial.n_gpu_layers) == (10, 10)
    assert partial.device == "GPU (10/30 layers)" and "10 of 30 layers fit" in partial.reason


def test_kv_at_a_long_context_takes_layers_away() -> None:
    assert plan(4 * GIB, context=2048).gpu_layers > plan(4 * GIB, context=65536).gpu_layers


def test_cpu_when_nothing_fits_no_gpu_or_no_offload_in_the_build() -> None:
    assert plan(256 * MIB).device == "CPU" and "no layer fits" in plan(256 * MIB).reason
    assert plan(None).device == "CPU" and "no GPU" in plan(None).reason
    no_build = plan(24 * GIB, offload=False)
    assert no_build.device == "CPU" and "no GPU offload" in no_build.reason


def test_unknown_gpu_memory_offloads_everything() -> None:
    assert plan(GPU_MEMORY_UNKNOWN).device == "GPU"


def test_shapes_of_the_real_models(smollm2_gguf: Path, gemma3_gguf: Path) -> None:
    smol = model_shape(smollm2_gguf)
    assert (smol.architecture, smol.n_layers, smol.kv_width) == ("llama", 30, 3 * 2 * 64)
    gemma = model_shape(gemma3_gguf)
    assert (gemma.architecture, gemma.n_layers, gemma.kv_width) == ("gemma3", 18, 1 * 2 * 256)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(GGUFHeaderError, match="not a GGUF"):
        model_shape(bogus)


def test_a_corrupt_header_is_a_header_error_not_a_crash(tmp_path: Path) -> None:
    corrupt = tmp_path / "truncated.gguf"
    corrupt.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 60)
    with pytest.raises(GGUFHeaderError):
        model_shape(corrupt)
