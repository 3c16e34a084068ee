"""Our GGUF metadata reader: the same values as the `gguf` package's reader on real files, every
value type, and one clear error for every malformed or hostile file."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.build.errors import BuildError
from models.build.gguf_info import read_gguf
from models.errors import GGUFFormatError
from models.gguf_metadata import GGUFMetadata, parse_metadata, read_metadata

gguf = pytest.importorskip("gguf")
T = gguf.GGUFValueType


def reader_value(field: Any) -> Any:
    """A GGUFReader field as a plain value (the conversion gguf_import used before)."""
    if field.types[0] == T.ARRAY:
        if field.types[-1] == T.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if field.types[0] == T.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return field.parts[field.data[0]].tolist()[0]


def assert_same_as_gguf_reader(path: Path, meta: GGUFMetadata) -> None:
    reader = gguf.GGUFReader(str(path), "r")
    expected = {k: reader_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert meta.fields == expected
    assert list(meta.fields) == list(expected)  # file order too
    assert meta.version == int(reader.fields["GGUF.version"].parts[0][0])
    assert (meta.alignment, meta.data_offset) == (reader.alignment, reader.data_offset)
    ours = [(t.name, t.shape, t.ggml_type, t.n_elements, meta.data_offset + t.offset)
            for t in meta.tensors]  # fmt: skip
    theirs = [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.n_elements, t.data_offset)
        for t in reader.tensors
    ]
    assert ours == theirs


# SmolLM2 carries every kind of value a real model's metadata has (49k-token string, float and
# int arrays, the chat template); Gemma 3's 262k vocabulary would only add the 20 s GGUFReader
# takes over it (read_gguf on Gemma is checked by tests/models/build/test_gguf_import.py).
def test_a_real_gguf_reads_as_the_gguf_package_reads_it(smollm2_gguf: Path) -> None:
    meta = read_metadata(smollm2_gguf)
    assert len(meta.fields["tokenizer.ggml.tokens"]) == 49152
    assert_same_as_gguf_reader(smollm2_gguf, meta)


def write_gguf(path: Path, values: dict[str, tuple[Any, Any, Any]], alignment: int = 32) -> None:
    writer = gguf.GGUFWriter(str(path), "test")
    if alignment != 32:
        writer.add_custom_alignment(alignment)
    for key, (value, vtype, sub_type) in values.items():
        writer.add_key_value(key, value, vtype, sub_type)
    writer.add_tensor("a.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("b.weight", np.ones(5, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


EVERY_TYPE: dict[str, tuple[Any, Any, Any]] = {
    "t.u8": (200, T.UINT8, None),
    "t.i8": (-100, T.INT8, None),
    "t.u16": (60_000, T.UINT16, None),
    "t.i16": (-30_000, T.INT16, None),
    "t.u32": (4_000_000_000, T.UINT32, None),
    "t.i32": (-2_000_000_000, T.INT32, None),
    "t.f32": (1.5, T.FLOAT32, None),
    "t.bool": (True, T.BOOL, None),
    "t.str": ("héllo ✓ <|im_end|>", T.STRING, None),
    "t.u64": (2**64 - 1, T.UINT64, None),
    "t.i64": (-(2**63), T.INT64, None),
    "t.f64": (0.1, T.FLOAT64, None),
    "t.strings": (["a", "", "ünï", "<0x0A>"], T.ARRAY, T.STRING),
    "t.ints": ([1, -2, 3], T.ARRAY, T.INT32),
    "t.u64s": ([0, 2**64 - 1], T.ARRAY, T.UINT64),
    "t.floats": ([0.5, -2.25, 1e30], T.ARRAY, T.FLOAT32),
    "t.doubles": ([0.1, -1e300], T.ARRAY, T.FLOAT64),
    "t.bools": ([True, False, True], T.ARRAY, T.BOOL),
    "t.bytes": ([0, 255], T.ARRAY, T.UINT8),
}


@pytest.fixture
def small_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "small.gguf"
    write_gguf(path, EVERY_TYPE, alignment=64)
    return path


def test_every_value_type_reads_back(small_gguf: Path) -> None:
    meta = read_metadata(small_gguf)
    assert meta.version == 3
    plain = {key: value for key, (value, _, _) in EVERY_TYPE.items()}
    plain["t.f32"], plain["t.floats"][2] = 1.5, float(np.float32(1e30))  # f32 precision
    assert meta.fields == {"general.architecture": "test", "general.alignment": 64, **plain}
    assert isinstance(meta.fields["t.bool"], bool) and meta.fields["t.bools"][1] is False
    [a, b] = meta.tensors
    assert (a.name, a.shape, a.ggml_type, a.n_elements) == ("a.weight", (4, 3), 0, 12)
    assert (b.name, b.shape, b.ggml_type, b.n_elements) == ("b.weight", (5,), 1, 5)
    assert meta.data_offset % 64 == 0 and b.offset % 64 == 0
    data = small_gguf.read_bytes()
    start = meta.data_offset + a.offset
    assert np.frombuffer(data[start : start + 48], np.float32).tolist() == list(range(12))
    assert_same_as_gguf_reader(small_gguf, meta)


def test_without_arrays_the_scalars_and_tensors_are_the_same(small_gguf: Path) -> None:
    full = read_metadata(small_gguf)
    scalars = read_metadata(small_gguf, arrays=False)
    assert scalars.fields == {k: v for k, v in full.fields.items() if not isinstance(v, list)}
    assert "t.str" in scalars.fields and "t.strings" not in scalars.fields
    assert (scalars.tensors, scalars.data_offset) == (full.tensors, full.data_offset)


def test_every_truncation_is_one_clear_error(small_gguf: Path) -> None:
    data = small_gguf.read_bytes()
    meta = parse_metadata(data)
    last_start = meta.data_offset + max(t.offset for t in meta.tensors)
    for n in range(last_start):
        for arrays in (True, False):  # skipped arrays are bounds-checked all the same
            with pytest.raises(GGUFFormatError, match="not a GGUF file|truncated"):
                parse_metadata(data[:n], arrays=arrays)


def test_truncated_tensor_data_is_not_a_readable_gguf(small_gguf: Path) -> None:
    meta = read_metadata(small_gguf)
    cut = meta.data_offset + meta.tensors[1].offset + 5  # half of b.weight's 10 bytes
    small_gguf.write_bytes(small_gguf.read_bytes()[:cut])
    with pytest.raises(BuildError, match="is not a readable GGUF file: truncated, tensor b.weight"):
        read_gguf(small_gguf)


def _str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _file(*kvs: bytes, tensors: bytes = b"", n_tensors: int = 0, version: int = 3) -> bytes:
    return struct.pack("<4sIQQ", b"GGUF", version, n_tensors, len(kvs)) + b"".join(kvs) + tensors


def _kv(key: bytes, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def _tensor(name: bytes, dims: list[int], offset: int = 0) -> bytes:
    shape = struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
    return _str(name) + shape + struct.pack("<IQ", 0, offset)


U8 = _kv(b"k", 0, b"\x07")
ARRAY = _kv(b"a", 9, struct.pack("<IQ", 0, 1) + b"\x07")
HOSTILE = {
    "empty": (b"", "it is empty"),
    "bad magic": (b"GGML" + _file(U8)[4:], "not a GGUF file: it starts with b'GGML'"),
    "short header": (_file(U8)[:10], "truncated: the GGUF header"),
    "version 1": (_file(U8, version=1), "GGUF version 1 is not supported"),
    "big-endian": (struct.pack(">4sIQQ", b"GGUF", 3, 0, 1), "big-endian"),
    "absurd kv count": (struct.pack("<4sIQQ", b"GGUF", 3, 0, 2**64 - 1), "truncated"),
    "absurd tensor count": (_file(U8, n_tensors=2**62), "truncated: 4611686018427387904 tensor"),
    "key past the end": (_file(struct.pack("<Q", 2**63) + b"k" * 9), "truncated: metadata key"),
    "string past the end": (_file(_kv(b"k", 8, struct.pack("<Q", 99) + b"abc")), "truncated"),
    "array count 2**62": (_file(_kv(b"k", 9, struct.pack("<IQ", 4, 2**62))), "truncated"),
    "string array 2**62": (_file(_kv(b"k", 9, struct.pack("<IQ", 8, 2**62))), "truncated"),
    "string in array past the end": (
        _file(_kv(b"k", 9, struct.pack("<IQ", 8, 2) + _str(b"a") + struct.pack("<Q", 50))),
        "truncated: string 1 of k",
    ),
    "nested array": (
        _file(_kv(b"k", 9, struct.pack("<IQIQ", 9, 1, 0, 1) + b"\0")),
        "k is an array of arrays",
    ),
    "unknown type": (_file(_kv(b"k", 13, b"\0" * 8)), "k has unknown value type 13"),
    "unknown array type": (_file(_kv(b"k", 9, struct.pack("<IQ", 99, 1))), "unknown value type"),
    "key not UTF-8": (_file(_kv(b"\xff\xfe", 0, b"\0")), "metadata key at byte 24 is not valid"),
    "duplicate key": (_file(U8, U8), "'k' appears twice"),
    "duplicate array key": (_file(ARRAY, ARRAY), "'a' appears twice"),  # skipped ones too
    "alignment 3": (_file(_kv(b"general.alignment", 4, b"\3\0\0\0")), "not a power of two"),
    "alignment as a string": (_file(_kv(b"general.alignment", 8, _str(b"32"))), "power of two"),
    "five dimensions": (_file(tensors=_tensor(b"t", [1] * 5), n_tensors=1), "5 dimensions"),
    "tensor name not UTF-8": (_file(tensors=_tensor(b"\xc3", [1]), n_tensors=1), "not valid"),
    "tensor data past the end": (
        _file(tensors=_tensor(b"t", [1], offset=2**40), n_tensors=1),
        "truncated: tensor t's data would start",
    ),
    "duplicate tensor": (
        _file(tensors=_tensor(b"t", [1]) * 2, n_tensors=2) + b"\0" * 64,
        "tensor t appears twice",
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_give_one_clear_error(name: str, tmp_path: Path) -> None:
    data, message = HOSTILE[name]
    path = tmp_path / "upload.gguf"
    path.write_bytes(data)
    for arrays in (True, False):
        with pytest.raises(GGUFFormatError, match=message):
            read_metadata(path, arrays=arrays)
    with pytest.raises(BuildError, match="is not a readable GGUF file: "):
        read_gguf(path)


def test_random_corruption_never_escapes_as_another_error(small_gguf: Path) -> None:
    data = small_gguf.read_bytes()
    rng = random.Random(1234)
    for _ in range(3000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(200)] = rng.randrange(256)  # the header and metadata
        try:
            parse_metadata(bytes(mutated))
        except GGUFFormatError:
            pass
