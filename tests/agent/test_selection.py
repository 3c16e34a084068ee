"""Variant and engine selection against synthetic hardware profiles and manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import SelectionError
from agent.selection import (
    GIB,
    Candidate,
    benchmark_candidates,
    explain,
    gpu_memory_budget,
    required_bytes,
    select_variant,
    variant_path,
)
from hwprobe.profile import Accelerator, HardwareProfile
from models.manifest import Manifest, Variant

ALL = {"tensorrt": "10.3", "openvino": "2026.4", "llamacpp": "0.3.36", "onnxruntime": "1.32"}
SHA = "0" * 64


def variant(vid: str, fmt: str, precision: str, engines: list[str], gib: float) -> Variant:
    files = {"gguf": [f"gguf/{vid}.gguf"], "onnx": ["onnx/model.onnx", "onnx/tokenizer.json"]}
    paths = files.get(fmt, [f"{vid}/openvino_model.xml", f"{vid}/openvino_model.bin"])
    return Variant.model_validate(
        {
            "id": vid,
            "format": fmt,
            "precision": precision,
            "engines": engines,
            "files": [{"path": p, "sha256": SHA, "size": 1} for p in paths],
            "memory_bytes": int(gib * GIB),
            "built_on_device": "tensorrt" in engines,
        }
    )


def manifest(scale: float = 1.0) -> Manifest:
    return Manifest(
        name="llama-3b",
        version="2",
        architecture="llama",
        context_length=4096,
        chat_template="{{ messages }}",
        variants=[
            variant("gguf-q4_0", "gguf", "q4_0", ["llamacpp"], 2.0 * scale),
            variant("openvino-int8", "openvino", "int8", ["openvino"], 3.5 * scale),
            variant("onnx-fp32", "onnx", "fp32", ["onnxruntime"], 12.0 * scale),
            variant("onnx-trt-fp16", "onnx", "fp16", ["tensorrt"], 6.0 * scale),
        ],
    )


def profile(
    klass: str, engines: list[str], *, mem_gib: float = 16, **extra: Any
) -> HardwareProfile:
    accelerators = {
        "jetson": [{"kind": "nvidia-jetson", "name": "Orin", "memory_bytes": None}],
        "nvidia-gpu": [{"kind": "nvidia-gpu", "name": "RTX", "memory_bytes": 8 * GIB}],
        "intel-igpu": [{"kind": "intel-igpu", "name": "UHD 620", "memory_bytes": None}],
        "intel-npu": [{"kind": "intel-npu", "name": "NPU", "memory_bytes": None}],
    }.get(klass, [])
    return HardwareProfile.model_validate(
        {
            "cpu": {"arch": "aarch64" if klass in ("jetson", "cpu-arm") else "x86_64"},
            "memory": {"total_bytes": int(mem_gib * GIB), "available_bytes": int(mem_gib * GIB)},
            "device_class": klass,
            "engines": engines,
            "accelerators": accelerators,
            **extra,
        }
    )


JETSON = profile("jetson", ["tensorrt", "llamacpp", "onnxruntime"])
IGPU = profile("intel-igpu", ["openvino", "llamacpp", "onnxruntime"])
CPU_X86 = profile("cpu-x86", ["llamacpp", "openvino", "onnxruntime"])


def test_jetson_picks_tensorrt_when_installed() -> None:
    chosen = select_variant(manifest(), JETSON, ALL)
    assert (chosen.variant_id, chosen.engine, chosen.device) == ("onnx-trt-fp16", "tensorrt", "GPU")


def test_jetson_without_tensorrt_falls_back_to_llamacpp() -> None:
    installed = {k: v for k, v in ALL.items() if k != "tensorrt"}
    chosen = select_variant(manifest(), JETSON, installed)
    assert chosen.engine == "llamacpp"
    reasons = {(c.variant_id, c.engine): c.reason for c in chosen.candidates}
    assert reasons[("onnx-trt-fp16", "tensorrt")] == "engine tensorrt not installed"


def test_intel_igpu_picks_openvino_on_gpu() -> None:
    chosen = select_variant(manifest(), IGPU, ALL)
    assert (chosen.engine, chosen.device, chosen.variant_id) == ("openvino", "GPU", "openvino-int8")


def test_intel_npu_picks_openvino_on_npu() -> None:
    npu = profile("intel-npu", ["openvino", "llamacpp", "onnxruntime"])
    assert select_variant(manifest(), npu, ALL).device == "NPU"


def test_cpu_x86_picks_llamacpp_and_explains_the_ranking() -> None:
    chosen = select_variant(manifest(), CPU_X86, ALL)
    assert (chosen.engine, chosen.device) == ("llamacpp", "CPU")
    by_engine = {c.engine: c for c in chosen.candidates}
    assert by_engine["tensorrt"].reason == "no NVIDIA GPU"
    assert by_engine["openvino"].reason == (
        "ranked 2nd: static preference for cpu-x86 is llamacpp > openvino > onnxruntime"
    )
    assert [c.accepted for c in chosen.candidates] == [True, True, True, False]


def test_memory_refusal_names_the_numbers() -> None:
    small = profile("cpu-x86", ["llamacpp", "openvino", "onnxruntime"], mem_gib=3.2)
    chosen = select_variant(manifest(), small, ALL)
    assert chosen.engine == "llamacpp"
    onnx = next(c for c in chosen.candidates if c.variant_id == "onnx-fp32")
    need = required_bytes(manifest().variant("onnx-fp32"), "onnxruntime")
    assert onnx.reason == f"needs {need / GIB:.1f} GiB, 3.2 GiB available"
    assert not onnx.accepted and need > 12 * GIB


def test_discrete_gpu_memory_bounds_tensorrt() -> None:
    gpu = profile("nvidia-gpu", ["tensorrt", "llamacpp", "onnxruntime", "openvino"], mem_gib=64)
    chosen = select_variant(manifest(), gpu, ALL)
    trt = next(c for c in chosen.candidates if c.engine == "tensorrt")
    assert not trt.accepted and trt.reason.endswith("8.0 GiB available")
    assert chosen.engine == "llamacpp"


def test_nothing_fits_raises_with_every_reason() -> None:
    tiny = profile("cpu-x86", ["llamacpp", "openvino", "onnxruntime"], mem_gib=1)
    with pytest.raises(SelectionError) as caught:
        select_variant(manifest(), tiny, {"llamacpp": "0.3"})
    message = str(caught.value)
    assert "gguf-q4_0/llamacpp: needs 2.5 GiB, 1.0 GiB available" in message
    assert "openvino-int8/openvino: engine openvino not installed" in message
    assert "onnx-trt-fp16/tensorrt: no NVIDIA GPU" in message


def test_prefer_moves_an_engine_first() -> None:
    chosen = select_variant(manifest(), CPU_X86, ALL, prefer="openvino")
    assert (chosen.engine, chosen.decided_by) == ("openvino", "configuration")
    assert select_variant(manifest(), CPU_X86, ALL, prefer="nonexistent").engine == "llamacpp"


def test_llamacpp_uses_gpu_only_when_the_build_offloads() -> None:
    runtime = {"engines": {"llamacpp": {"installed": True, "devices": ["cpu", "gpu"]}}}
    gpu = profile("nvidia-gpu", ["tensorrt", "llamacpp"], mem_gib=64, runtime=runtime)
    chosen = select_variant(manifest(scale=2.0), gpu, {"llamacpp": "0.3"})
    assert (chosen.engine, chosen.device) == ("llamacpp", "GPU")


def test_benchmark_keeps_the_fastest_and_caches(tmp_path: Path) -> None:
    selection = select_variant(manifest(), CPU_X86, ALL)
    speeds = {"llamacpp": 40.0, "openvino": 55.0, "onnxruntime": 10.0}
    calls: list[str] = []

    def measure(c: Candidate) -> float:
        calls.append(c.engine)
        if c.engine == "onnxruntime":
            raise RuntimeError("broken candidate")
        return speeds[c.engine]

    results = tmp_path / "bench.json"
    best = benchmark_candidates(
        selection, hardware_digest="abc", results_file=results, measure=measure
    )
    assert (best.engine, best.decided_by) == ("openvino", "benchmark")
    assert json.loads(results.read_text())["llama-3b:2|abc"]["tokens_per_s"] == {
        "gguf-q4_0/llamacpp": 40.0,
        "openvino-int8/openvino": 55.0,
    }
    again = benchmark_candidates(
        selection, hardware_digest="abc", results_file=results, measure=measure
    )
    assert again.engine == "openvino" and len(calls) == 3
    assert "55.0 tok/s" in explain(again) and "<- chosen" in explain(again)
    assert explain(again).splitlines()[0].endswith("chosen by benchmark")


def test_variant_path_points_at_what_the_engine_loads(tmp_path: Path) -> None:
    m = manifest()
    assert variant_path(tmp_path, m.variant("gguf-q4_0")) == tmp_path / "gguf/gguf-q4_0.gguf"
    assert variant_path(tmp_path, m.variant("onnx-fp32")) == tmp_path / "onnx/model.onnx"
    assert variant_path(tmp_path, m.variant("openvino-int8")) == tmp_path / "openvino-int8"


def test_explain_lists_rejections() -> None:
    text = explain(select_variant(manifest(), CPU_X86, {"llamacpp": "0.3"}))
    assert text.splitlines()[0] == (
        "model llama-3b:2: gguf-q4_0 on llamacpp (CPU), chosen by static preference"
    )
    assert "engine openvino not installed" in text


def test_gpu_budget_for_llamacpp_comes_from_the_gpu_hwprobe_found() -> None:
    gpu = profile("nvidia-gpu", ["llamacpp"])
    assert gpu_memory_budget("llamacpp", "GPU", gpu) == 8 * GIB
    unknown = gpu.model_copy(update={"accelerators": [Accelerator(kind="nvidia-gpu", name="?")]})
    assert gpu_memory_budget("llamacpp", "GPU", unknown) == -1
    assert gpu_memory_budget("llamacpp", "GPU", JETSON) == 16 * GIB  # shared system memory
    assert gpu_memory_budget("llamacpp", "CPU", gpu) is None
    assert gpu_memory_budget("openvino", "GPU", gpu) is None


def test_llamacpp_too_big_for_the_gpu_is_offloaded_in_part() -> None:
    runtime = {"engines": {"llamacpp": {"installed": True, "devices": ["cpu", "gpu"]}}}
    gpu = profile("nvidia-gpu", ["llamacpp"], mem_gib=64, runtime=runtime)
    chosen = select_variant(manifest(scale=4.0), gpu, {"llamacpp": "0.3"})  # 9.4 GiB > 8 GiB
    assert (chosen.engine, chosen.device) == ("llamacpp", "GPU (partial)")
    small = profile("nvidia-gpu", ["llamacpp"], mem_gib=4, runtime=runtime)
    with pytest.raises(SelectionError, match="needs 9.4 GiB, 4.0 GiB available"):
        select_variant(manifest(scale=4.0), small, {"llamacpp": "0.3"})
