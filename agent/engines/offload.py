"""How many of a GGUF model's layers llama.cpp should put on the GPU, and what to call that.

Decided before loading, from the GGUF header (layer count, attention shape) and the GPU
memory hwprobe found: weights per layer are the file size over the layer count (embeddings
included, so the estimate errs high), plus the KV cache each layer needs at the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models import gguf_metadata
from models.errors import GGUFFormatError

# Of the GPU's memory, the share we plan to fill, and what we leave for llama.cpp's compute
# buffers and the CUDA context (measured on CUDA builds: a few hundred MiB for small models).
GPU_MEMORY_FRACTION = 0.9
GPU_RESERVE_BYTES = 512 << 20
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
# LoadOptions.gpu_memory_bytes when hwprobe found a usable GPU but not its memory size.
GPU_MEMORY_UNKNOWN = -1


class GGUFHeaderError(ValueError):
    """The file's header is not GGUF metadata we can read, or lacks what offloading needs."""


@dataclass(frozen=True)
class ModelShape:
    """What offloading needs from a GGUF header."""

    architecture: str
    n_layers: int
    kv_width: int  # (key + value) width of one layer's KV entry per token, all KV heads
    file_bytes: int

    def kv_bytes_per_layer(self, context_length: int) -> int:
        """KV cache one layer holds at this context."""
        return context_length * self.kv_width * KV_BYTES_PER_VALUE


@dataclass(frozen=True)
class OffloadPlan:
    """Layers on the GPU out of the model's total, and why."""

    gpu_layers: int
    total_layers: int
    reason: str

    @property
    def device(self) -> str:
        """`CPU`, `GPU`, or `GPU (k/n layers)` when only part of the model is offloaded."""
        if self.gpu_layers <= 0:
            return "CPU"
        if self.gpu_layers >= self.total_layers:
            return "GPU"
        return f"GPU ({self.gpu_layers}/{self.total_layers} layers)"

    @property
    def n_gpu_layers(self) -> int:
        """The value for llama.cpp: -1 (all, output layer included) when everything fits."""
        return -1 if self.total_layers and self.gpu_layers >= self.total_layers else self.gpu_layers


def read_metadata(path: Path) -> dict[str, int | float | bool | str]:
    """The scalar and string metadata of a GGUF file (arrays such as the vocabulary skipped)."""
    try:
        return gguf_metadata.read_metadata(path, arrays=False).fields
    except GGUFFormatError as exc:
        raise GGUFHeaderError(f"{path.name}: {exc.reason}") from exc


def model_shape(path: Path) -> ModelShape:
    """Layer count and KV width from a GGUF header; GGUFHeaderError when they are missing."""
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))

    def number(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if not isinstance(value, int | float):
            raise GGUFHeaderError(f"{path.name} has no {arch}.{key} in its metadata")
        return int(value)

    heads = number("attention.head_count")
    head_dim = number("embedding_length") // max(heads, 1)
    kv_heads = number("attention.head_count_kv", heads)
    width = kv_heads * (
        number("attention.key_length", head_dim) + number("attention.value_length", head_dim)
    )
    return ModelShape(arch, number("block_count"), width, path.stat().st_size)


def plan_offload(
    shape: ModelShape,
    *,
    context_length: int,
    supports_gpu_offload: bool,
    gpu_memory_bytes: int | None,
) -> OffloadPlan:
    """As many layers on the GPU as fit its memory budget; none without GPU offload or a GPU."""
    n = shape.n_layers
    if not supports_gpu_offload:
        return OffloadPlan(0, n, "this llama.cpp build has no GPU offload")
    if gpu_memory_bytes is None:
        return OffloadPlan(0, n, "hwprobe found no GPU llama.cpp can use")
    if gpu_memory_bytes == GPU_MEMORY_UNKNOWN:  # a failed GPU load falls back to the CPU
        return OffloadPlan(n, n, f"GPU memory unknown: offloading all {n} layers")
    budget = int(gpu_memory_bytes * GPU_MEMORY_FRACTION) - GPU_RESERVE_BYTES
    per_layer = -(-shape.file_bytes // max(n, 1)) + shape.kv_bytes_per_layer(context_length)
    fit = max(0, min(n, budget // max(per_layer, 1)))
    mib = per_layer / (1 << 20)
    budget_gib = max(budget, 0) / (1 << 30)
    if fit == 0:
        why = f"no layer fits: {mib:.0f} MiB per layer, {budget_gib:.1f} GiB GPU budget"
    elif fit < n:
        why = f"{fit} of {n} layers fit ({mib:.0f} MiB each, {budget_gib:.1f} GiB GPU budget)"
    else:
        why = f"all {n} layers fit ({mib:.0f} MiB each, {budget_gib:.1f} GiB GPU budget)"
    return OffloadPlan(fit, n, why)
