"""A GGUF file's header, key/value metadata and tensor infos, read without touching its weights.

The `gguf` package's GGUFReader builds a numpy view per metadata item, which takes most of a
minute for a 262k-token vocabulary; this reads the same layout with `struct` over an mmap.
Only little-endian GGUF v2/v3 files are read: v1 and big-endian files are refused.

The file is treated as hostile (it may be a dashboard upload): every length and count is
checked against the bytes left before anything is read or allocated, so a malformed file
raises GGUFFormatError, never MemoryError, IndexError or a long loop.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from models.errors import GGUFFormatError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses tensors with more
_STRING, _ARRAY, _UINT32 = 8, 9, 4
# Scalar value type -> struct format code (u8 i8 u16 i16 u32 i32 f32 bool, u64 i64 f64).
_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SCALARS = {kind: struct.Struct("<" + code) for kind, code in _CODES.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")
# The fewest bytes a KV pair (empty key, type, u8) and a tensor info (empty name, 0 dims) take.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the GGUF's tensor info table (its data is not read)."""

    name: str
    shape: tuple[int, ...]  # ggml order: the fastest-varying dimension first
    ggml_type: int  # a gguf.GGMLQuantizationType value
    offset: int  # from the start of the tensor data section

    @property
    def n_elements(self) -> int:
        """How many values the tensor holds."""
        return prod(self.shape)


@dataclass(frozen=True)
class GGUFMetadata:
    """A GGUF's version, key/value metadata as plain Python values, and tensor infos."""

    version: int
    fields: dict[str, Any]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int  # where the tensor data section starts in the file
    file_size: int


_SKIPPED = object()  # an array value passed over (parse_metadata with arrays=False)


class _Cursor:
    """Bounds-checked little-endian reads over a buffer; every overrun is a GGUFFormatError.

    With `arrays` false, array values are checked and passed over instead of decoded.
    """

    def __init__(self, buf: mmap.mmap | bytes, *, arrays: bool = True) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.arrays = arrays

    def need(self, n: int, what: str) -> None:
        """Fail unless `n` more bytes are left."""
        if n > self.size - self.pos:
            raise GGUFFormatError(
                f"truncated: {what} at byte {self.pos} needs {n} bytes, "
                f"{self.size - self.pos} left in the file"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"{what} length")
        self.need(n, what)
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(data)

    def name(self, what: str) -> str:
        """A key or tensor name: must be valid UTF-8."""
        start = self.pos
        try:
            return self.raw_string(what).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"{what} at byte {start} is not valid UTF-8") from exc

    def value(self, kind: int, key: str) -> Any:
        if kind == _STRING:
            return self.raw_string(f"string value of {key}").decode("utf-8", errors="replace")
        if kind == _ARRAY:
            return self.array(key)
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise GGUFFormatError(f"{key} has unknown value type {kind}")
        self.need(fmt.size, f"value of {key}")
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def array(self, key: str) -> Any:
        kind = self.u32(f"array item type of {key}")
        count = self.u64(f"array length of {key}")
        if kind == _STRING:
            self.need(8 * count, f"{count} strings of {key}")  # each has at least its length
            return self.strings(count, key)
        if kind == _ARRAY:
            raise GGUFFormatError(f"{key} is an array of arrays, which is not supported")
        item = _SCALARS.get(kind)
        if item is None:
            raise GGUFFormatError(f"{key} is an array of unknown value type {kind}")
        self.need(count * item.size, f"{count} items of {key}")  # before building the format
        if not self.arrays:
            self.pos += count * item.size
            return _SKIPPED
        fmt = struct.Struct(f"<{count}{_CODES[kind]}")
        items = list(fmt.unpack_from(self.buf, self.pos))
        self.pos += fmt.size
        return items

    def strings(self, count: int, key: str) -> Any:
        """`count` strings in a tight loop (a vocabulary holds hundreds of thousands)."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        out: list[str] = []
        append, keep = out.append, self.arrays
        for index in range(count):
            if size - pos < 8:
                self.pos = pos
                self.need(8, f"length of string {index} of {key}")
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                self.pos = pos
                self.need(n, f"string {index} of {key}")
            if keep:
                append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out if keep else _SKIPPED


def _header(cur: _Cursor) -> tuple[int, int, int]:
    magic = bytes(cur.buf[:4])
    if magic != MAGIC:
        raise GGUFFormatError(f"not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
    cur.need(_HEADER.size, "the GGUF header")
    _, version, tensor_count, kv_count = _HEADER.unpack_from(cur.buf, 0)
    cur.pos = _HEADER.size
    if version & 0xFFFF == 0 and version:  # the version's bytes swapped: written big-endian
        raise GGUFFormatError("a big-endian GGUF file; only little-endian files are read")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(
            f"GGUF version {version} is not supported (only 2 and 3); "
            "convert the model again with a current llama.cpp"
        )
    return int(version), int(tensor_count), int(kv_count)


def _fields(cur: _Cursor, kv_count: int) -> tuple[dict[str, Any], int]:
    cur.need(kv_count * _MIN_KV_BYTES, f"{kv_count} metadata entries")
    fields: dict[str, Any] = {}
    seen: set[str] = set()  # arrays left out of `fields` included
    alignment = DEFAULT_ALIGNMENT
    for _ in range(kv_count):
        key = cur.name("metadata key")
        if key in seen:
            raise GGUFFormatError(f"metadata key {key!r} appears twice")
        seen.add(key)
        kind = cur.u32(f"value type of {key}")
        value = cur.value(kind, key)
        if value is _SKIPPED:
            continue
        fields[key] = value
        if key == "general.alignment":
            alignment = fields[key]
            if kind != _UINT32 or alignment == 0 or alignment & (alignment - 1):
                raise GGUFFormatError(f"general.alignment {alignment!r} is not a power of two")
    return fields, alignment


def _tensor_info(cur: _Cursor) -> TensorInfo:
    name = cur.name("tensor name")
    n_dims = cur.u32(f"dimension count of tensor {name}")
    if n_dims > MAX_DIMS:
        raise GGUFFormatError(f"tensor {name} has {n_dims} dimensions; at most {MAX_DIMS}")
    shape = tuple(cur.u64(f"dimension of tensor {name}") for _ in range(n_dims))
    ggml_type = cur.u32(f"type of tensor {name}")
    offset = cur.u64(f"data offset of tensor {name}")
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset)


def parse_metadata(buf: mmap.mmap | bytes, *, arrays: bool = True) -> GGUFMetadata:
    """Parse a GGUF's header, metadata and tensor infos from its bytes (or an mmap of them).

    `arrays=False` leaves array values (the vocabulary, per-layer figures) out of `fields`:
    they are still checked, not decoded, for callers that want the scalars fast.
    """
    cur = _Cursor(buf, arrays=arrays)
    version, tensor_count, kv_count = _header(cur)
    fields, alignment = _fields(cur, kv_count)
    cur.need(tensor_count * _MIN_TENSOR_BYTES, f"{tensor_count} tensor infos")
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        tensor = _tensor_info(cur)
        if tensor.name in names:
            raise GGUFFormatError(f"tensor {tensor.name} appears twice")
        names.add(tensor.name)
        tensors.append(tensor)
    data_offset = -(-cur.pos // alignment) * alignment
    for tensor in tensors:
        if data_offset + tensor.offset > cur.size:
            raise GGUFFormatError(
                f"truncated: tensor {tensor.name}'s data would start at byte "
                f"{data_offset + tensor.offset}, past the end of the file ({cur.size} bytes)"
            )
    return GGUFMetadata(
        version=version,
        fields=fields,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=cur.size,
    )


def read_metadata(path: Path, *, arrays: bool = True) -> GGUFMetadata:
    """Read a GGUF file's header, key/value metadata and tensor infos (never its weights)."""
    with path.open("rb") as fh:
        if not fh.read(4):
            raise GGUFFormatError("not a GGUF file: it is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return parse_metadata(buf, arrays=arrays)
