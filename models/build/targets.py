"""The build targets: each converts the checkpoint into one subdirectory and names its variants."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.build.checkpoint import CheckpointInfo
from models.build.errors import BuildError
from models.manifest import EngineName, Format, Precision


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
TargetFn = Callable[[CheckpointInfo, Path, str], list[VariantDraft]]


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


def _f32_gguf(info: CheckpointInfo, out_dir: Path, name: str) -> Path:
    from models.build.gguf_export import write_gguf

    path = out_dir / "gguf" / "model-f32.gguf"
    if not path.is_file():  # gguf-q4 and gguf-f32 share it within one build
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(info, path, name)
    return path


def build_gguf_f32(info: CheckpointInfo, out_dir: Path, name: str) -> list[VariantDraft]:
    """Unquantized GGUF: the parity reference for llama.cpp."""
    path = _f32_gguf(info, out_dir, name)
    rel = path.relative_to(out_dir).as_posix()
    return [VariantDraft("gguf-f32", "gguf", "f32", ["llamacpp"], [rel], path.stat().st_size, 2)]


def build_gguf_q4(
    info: CheckpointInfo, out_dir: Path, name: str, q4_type: Q4Type | None = None
) -> list[VariantDraft]:
    """4-bit GGUF by llama.cpp: `q4_type`, else Q4_K_M when the dims allow, else Q4_0."""
    from models.build.gguf_export import choose_q4_type, quantize_gguf

    precision = q4_type or choose_q4_type(info)
    src = _f32_gguf(info, out_dir, name)
    dst = _fresh(out_dir / "gguf" / f"model-{precision}.gguf")
    quantize_gguf(src, dst, precision)
    rel = dst.relative_to(out_dir).as_posix()
    return [
        VariantDraft(
            f"gguf-{precision}", "gguf", precision, ["llamacpp"], [rel], dst.stat().st_size, 2
        )
    ]


def _openvino(info: CheckpointInfo, out_dir: Path, int8: bool) -> list[VariantDraft]:
    from models.build.openvino_export import export_openvino

    sub = "openvino-int8" if int8 else "openvino-fp32"
    export_openvino(info.hf_dir, _fresh(out_dir / sub), int8=int8)
    weights = (out_dir / sub / "openvino_model.bin").stat().st_size
    precision: Precision = "int8" if int8 else "fp32"
    # The CPU plugin keeps its KV cache in 8-16 bits; size it at 2 bytes a value.
    return [
        VariantDraft(
            sub, "openvino", precision, ["openvino"], _files_under(out_dir, sub), weights, 2
        )
    ]


def build_openvino_int8(info: CheckpointInfo, out_dir: Path, name: str) -> list[VariantDraft]:
    """OpenVINO IR with INT8 (per-channel, asymmetric) weight compression by NNCF."""
    return _openvino(info, out_dir, int8=True)


def build_openvino_fp(info: CheckpointInfo, out_dir: Path, name: str) -> list[VariantDraft]:
    """OpenVINO IR at full precision: the parity reference for openvino-genai."""
    return _openvino(info, out_dir, int8=False)


def build_onnx(info: CheckpointInfo, out_dir: Path, name: str) -> list[VariantDraft]:
    """One fp32 ONNX decoder, listed twice: as is for ONNX Runtime, FP16 engine for TensorRT."""
    from models.build.onnx_export import export_onnx

    export_onnx(info.hf_dir, _fresh(out_dir / "onnx"))
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
    "gguf-f32": build_gguf_f32,
    "openvino-int8": build_openvino_int8,
    "openvino-fp": build_openvino_fp,
    "onnx": build_onnx,
}
DEFAULT_TARGETS = ("gguf-q4", "openvino-int8", "onnx")


def resolve_targets(targets: list[str]) -> list[str]:
    """Validate target names, dropping duplicates and keeping their order."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise BuildError(
            f"unknown build target(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(TARGETS)}"
        )
    return list(dict.fromkeys(targets))
