"""The build targets: each converts the checkpoint into one subdirectory and names its variants."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hwprobe.profile import EngineName
from models.build.checkpoint import CheckpointInfo
from models.build.errors import BuildError
from models.manifest import Format, Precision


@dataclass(frozen=True)
class VariantDraft:
    """A variant before hashing: its files (relative paths) and how to size its memory."""

    id: str
    format: Format
    precision: Precision
    engines: list[EngineName]
    files: list[str]
    weight_bytes: int
    kv_bytes_per_value: int
    built_on_device: bool = False


Q4Type = Literal["q4_0", "q4_k_m"]


@dataclass(frozen=True)
class BuildContext:
    """What every target gets: the checkpoint, where to write, and a scratch dir for the build."""

    info: CheckpointInfo
    out_dir: Path
    name: str
    # Scratch space the pipeline deletes after the build: intermediates never reach out_dir.
    work_dir: Path
    q4_type: Q4Type | None = None
    verbose: bool = False


TargetFn = Callable[[BuildContext], list[VariantDraft]]


def _files_under(out_dir: Path, sub: str) -> list[str]:
    return sorted(
        p.relative_to(out_dir).as_posix() for p in (out_dir / sub).rglob("*") if p.is_file()
    )


def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def _f32_gguf(ctx: BuildContext) -> Path:
    from models.build.gguf_export import convert_to_gguf

    path = ctx.work_dir / "model-f32.gguf"
    if not path.is_file():  # the GGUF targets of one build share it
        convert_to_gguf(ctx.info.hf_dir, path, "f32", ctx.verbose, model_name=ctx.name)
    return path


def _gguf_draft(ctx: BuildContext, path: Path, precision: Precision) -> list[VariantDraft]:
    rel = path.relative_to(ctx.out_dir).as_posix()
    size = path.stat().st_size
    return [VariantDraft(f"gguf-{precision}", "gguf", precision, ["llamacpp"], [rel], size, 2)]


def build_gguf_f32(ctx: BuildContext) -> list[VariantDraft]:
    """Unquantized GGUF: the parity reference for llama.cpp."""
    src = _f32_gguf(ctx)
    dst = _fresh(ctx.out_dir / "gguf" / "model-f32.gguf")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the scratch dir lies inside out_dir: same filesystem
    except OSError:
        shutil.copy2(src, dst)
    return _gguf_draft(ctx, dst, "f32")


def _quantized(ctx: BuildContext, precision: Literal["q4_0", "q4_k_m", "q8_0"]) -> Path:
    from models.build.gguf_export import quantize_gguf

    src = _f32_gguf(ctx)
    dst = _fresh(ctx.out_dir / "gguf" / f"model-{precision}.gguf")
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_gguf(src, dst, precision)
    return dst


def build_gguf_q4(ctx: BuildContext) -> list[VariantDraft]:
    """4-bit GGUF by llama.cpp: the context's q4_type, else Q4_K_M when dims allow, else Q4_0."""
    from models.build.gguf_export import choose_q4_type

    precision = ctx.q4_type or choose_q4_type(ctx.info)
    return _gguf_draft(ctx, _quantized(ctx, precision), precision)


def build_gguf_q8(ctx: BuildContext) -> list[VariantDraft]:
    """8-bit GGUF (Q8_0) by llama.cpp."""
    return _gguf_draft(ctx, _quantized(ctx, "q8_0"), "q8_0")


def _openvino(ctx: BuildContext, int8: bool) -> list[VariantDraft]:
    from models.build.openvino_export import export_openvino

    sub, out_dir = ("openvino-int8" if int8 else "openvino-fp32"), ctx.out_dir
    export_openvino(ctx.info.hf_dir, _fresh(out_dir / sub), int8=int8, work_dir=ctx.work_dir)
    weights = (out_dir / sub / "openvino_model.bin").stat().st_size
    precision: Precision = "int8" if int8 else "fp32"
    # The CPU plugin keeps its KV cache in 8-16 bits; size it at 2 bytes a value.
    return [
        VariantDraft(
            sub, "openvino", precision, ["openvino"], _files_under(out_dir, sub), weights, 2
        )
    ]


def build_openvino_int8(ctx: BuildContext) -> list[VariantDraft]:
    """OpenVINO IR with INT8 (per-channel, asymmetric) weight compression by NNCF."""
    return _openvino(ctx, int8=True)


def build_openvino_fp(ctx: BuildContext) -> list[VariantDraft]:
    """OpenVINO IR at full precision: the parity reference for openvino-genai."""
    return _openvino(ctx, int8=False)


def build_onnx(ctx: BuildContext) -> list[VariantDraft]:
    """One fp32 ONNX decoder, listed twice: as is for ONNX Runtime, FP16 engine for TensorRT."""
    from models.build.onnx_export import export_onnx

    out_dir = ctx.out_dir
    export_onnx(ctx.info.hf_dir, _fresh(out_dir / "onnx"))
    files = _files_under(out_dir, "onnx")
    weights = sum((out_dir / f).stat().st_size for f in files if ".onnx" in f)
    return [
        VariantDraft("onnx-fp32", "onnx", "fp32", ["onnxruntime"], files, weights, 4),
        VariantDraft(
            "onnx-trt-fp16",
            "onnx",
            "fp16",
            ["tensorrt"],
            files,
            weights // 2,
            2,
            built_on_device=True,
        ),
    ]


TARGETS: dict[str, TargetFn] = {
    "gguf-q4": build_gguf_q4,
    "gguf-q8": build_gguf_q8,
    "gguf-f32": build_gguf_f32,
    "openvino-int8": build_openvino_int8,
    "openvino-fp": build_openvino_fp,
    "onnx": build_onnx,
}
DEFAULT_TARGETS = ("gguf-q4", "openvino-int8", "onnx")
# What a failed target may have left behind, removed under --keep-going.
TARGET_OUTPUTS = {
    "gguf-q4": ("gguf/model-q4_0.gguf", "gguf/model-q4_k_m.gguf"),
    "gguf-q8": ("gguf/model-q8_0.gguf",),
    "gguf-f32": ("gguf/model-f32.gguf",),
    "openvino-int8": ("openvino-int8",),
    "openvino-fp": ("openvino-fp32",),
    "onnx": ("onnx",),
}


def resolve_targets(targets: list[str]) -> list[str]:
    """Validate target names, dropping duplicates and keeping their order."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise BuildError(
            f"unknown build target(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(TARGETS)}"
        )
    return list(dict.fromkeys(targets))
