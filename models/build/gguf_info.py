"""What a `.gguf` file's own metadata says about the model: architecture, context, quantization,
tokenizer specials and chat template (models.gguf_metadata reads it; the file may be an upload,
so values of the wrong type are refused rather than trusted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

from models.build.checkpoint import END_OF_TURN_TEXTS
from models.build.errors import BuildError
from models.errors import GGUFFormatError
from models.gguf_metadata import GGUFMetadata, TensorInfo, read_metadata
from models.manifest import Precision

_CONTROL_TYPES = (3, 4)  # gguf.TokenType.CONTROL, USER_DEFINED
# The weight type that dominates a GGUF without `general.file_type`, as a file type.
_TENSOR_TYPE_PRECISION = {"q2_k": "q2_k", "q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
_PRECISIONS = frozenset(get_args(Precision))
T = TypeVar("T")


@dataclass(frozen=True)
class GGUFInfo:
    """What the manifest needs from a GGUF's metadata."""

    path: Path
    architecture: str
    name: str | None
    context_length: int
    precision: Precision
    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    chat_template: str | None
    bos: tuple[str, int] | None
    eos: tuple[str, int] | None
    stop: list[tuple[str, int]] = field(default_factory=list)

    def kv_cache_bytes(self, bytes_per_value: int = 2) -> int:
        """Keys and values of every layer at the default context (f16 cache)."""
        per_position = 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value
        return per_position * self.context_length


def _ggml_type(ggml_type: int) -> Any:
    import gguf

    try:
        return gguf.GGMLQuantizationType(ggml_type)
    except ValueError as exc:
        raise BuildError(f"GGML tensor type {ggml_type} is unknown to this gguf package") from exc


def _int_field(fields: dict[str, Any], key: str) -> int | None:
    """An integer value (or an array's first, as per-layer values are), None when absent."""
    value = fields.get(key)
    if isinstance(value, list) and value:
        value = value[0]
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BuildError(f"GGUF metadata {key} is {value!r}, not an integer")


def _precision(file_type: int | None, tensors: list[TensorInfo]) -> Precision:
    import gguf

    if file_type is not None:
        try:
            name = gguf.LlamaFileType(file_type).name.lower()
        except ValueError as exc:
            raise BuildError(f"GGUF file type {file_type} is unknown to this gguf package") from exc
        name = name.removeprefix("mostly_").removeprefix("all_")
    else:  # older files: the type holding most of the 2-D weights
        weights: Counter[str] = Counter()
        for tensor in tensors:
            weights[_ggml_type(tensor.ggml_type).name.lower()] += tensor.n_elements
        top = weights.most_common(1)[0][0] if weights else "f32"
        name = _TENSOR_TYPE_PRECISION.get(top, top)
    if name not in _PRECISIONS:
        raise BuildError(f"GGUF quantization {name!r} is not one EdgeFleet knows")
    return name  # type: ignore[return-value]  # checked against Precision just above


def _check_extents(path: Path, meta: GGUFMetadata) -> None:
    """Every tensor's data lies inside the file: a truncated download or upload is refused."""
    import gguf

    for tensor in meta.tensors:
        block, block_bytes = gguf.GGML_QUANT_SIZES[_ggml_type(tensor.ggml_type)]
        end = meta.data_offset + tensor.offset + tensor.n_elements * block_bytes // block
        if end > meta.file_size:
            raise BuildError(
                f"{path} is not a readable GGUF file: truncated, tensor {tensor.name} ends at "
                f"byte {end} but the file has {meta.file_size}; download or copy it again"
            )


def _special(tokens: list[str], fields: dict[str, Any], key: str) -> tuple[str, int] | None:
    token_id = _int_field(fields, f"tokenizer.ggml.{key}_token_id")
    if token_id is None or not 0 <= token_id < len(tokens):
        return None
    return tokens[token_id], token_id


def _stop_tokens(
    tokens: list[str], types: list[int], fields: dict[str, Any]
) -> list[tuple[str, int]]:
    """eos, eot and eom by id, then the known end-of-turn texts the vocab holds as specials."""
    found = [_special(tokens, fields, k) for k in ("eos", "eot", "eom")]
    stops = [t for t in found if t is not None]
    index = {t: i for i, t in enumerate(tokens) if i < len(types) and types[i] in _CONTROL_TYPES}
    stops += [(t, index[t]) for t in END_OF_TURN_TEXTS if t in index]
    return list(dict.fromkeys(stops))


def _list_of(fields: dict[str, Any], key: str, kind: type[T]) -> list[T]:
    """An array of `kind` values; empty when absent or of another type."""
    value = fields.get(key)
    if isinstance(value, list) and all(isinstance(v, kind) for v in value):
        return value
    return []


def read_gguf(path: Path) -> GGUFInfo:
    """Read a GGUF's metadata (never its weights) into a GGUFInfo."""
    try:
        import gguf  # noqa: F401  # names the quantization types (_precision, _check_extents)
    except ImportError as exc:
        raise BuildError("reading a GGUF needs the gguf package: pip install gguf") from exc
    try:
        meta = read_metadata(path)
    except OSError as exc:
        raise BuildError(f"{path} is not a readable GGUF file: {exc}") from exc
    except GGUFFormatError as exc:
        raise BuildError(f"{path} is not a readable GGUF file: {exc.reason}") from exc
    _check_extents(path, meta)
    fields = meta.fields
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise BuildError(f"{path} has no general.architecture; is it a GGUF model file?")

    def arch_int(key: str, default: int | None = None) -> int:
        value = _int_field(fields, f"{arch}.{key}")
        if value is None:
            if default is None:
                raise BuildError(f"{path} has no {arch}.{key} in its metadata")
            return default
        return value

    heads = arch_int("attention.head_count", 1)
    embedding = arch_int("embedding_length", 0)
    tokens = _list_of(fields, "tokenizer.ggml.tokens", str)
    types = _list_of(fields, "tokenizer.ggml.token_type", int)
    template = fields.get("tokenizer.chat_template")
    name = fields.get("general.name")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        context_length=arch_int("context_length"),
        precision=_precision(_int_field(fields, "general.file_type"), meta.tensors),
        parameters=sum(t.n_elements for t in meta.tensors),
        layers=arch_int("block_count"),
        kv_heads=arch_int("attention.head_count_kv", heads),
        head_dim=arch_int("attention.key_length", embedding // max(heads, 1)),
        chat_template=template if isinstance(template, str) and template.strip() else None,
        bos=_special(tokens, fields, "bos"),
        eos=_special(tokens, fields, "eos"),
        stop=_stop_tokens(tokens, types, fields),
    )
