"""The manifest format: validation, lookups and the canonical bytes the signature covers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.manifest import MANIFEST_FILE, Manifest


def test_load_ref_variant_and_sizes(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    assert manifest.ref == "tiny-test:1.0"
    assert manifest.schema_version == 1
    gguf = manifest.variant("gguf-q4_0")
    assert gguf.engines == ["llamacpp"]
    assert gguf.size_bytes == 200_000 + len(b'{"model": {"type": "BPE"}}')
    with pytest.raises(KeyError, match="model tiny-test:1.0 has no variant 'trt-fp16'"):
        manifest.variant("trt-fp16")


def test_canonical_bytes_ignore_key_order_and_whitespace(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    shuffled = json.dumps(dict(reversed(list(data.items()))), indent=3)
    again = Manifest.model_validate_json(shuffled)
    assert again.canonical_bytes() == manifest.canonical_bytes()
    canonical = manifest.canonical_bytes()
    assert b"\n" not in canonical and b": " not in canonical
    dumped = json.loads(manifest.model_dump_json())
    # stop tokens came later: left out while empty, so older signatures still verify
    assert dumped["tokenizer"].pop("stop_tokens") == []
    assert dumped["tokenizer"].pop("stop_token_ids") == []
    assert all(v.pop("embedding_file") is None for v in dumped["variants"])  # likewise
    assert json.loads(canonical) == dumped
    top_keys = list(json.loads(canonical))
    assert top_keys == sorted(top_keys)


def test_stop_tokens_are_signed_when_present(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    changed = manifest.model_copy(deep=True)
    changed.tokenizer.stop_tokens, changed.tokenizer.stop_token_ids = ["<|im_end|>"], [2]
    assert b'"stop_tokens":["<|im_end|>"]' in changed.canonical_bytes()
    assert changed.canonical_bytes() != manifest.canonical_bytes()


def test_canonical_bytes_change_with_any_value(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    changed = manifest.model_copy(deep=True)
    changed.variants[1].files[0].size += 1
    assert changed.canonical_bytes() != manifest.canonical_bytes()


def test_canonical_bytes_keep_non_ascii_as_utf8(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir).model_copy(update={"chat_template": "¿{{ m }}?"})
    assert "¿".encode() in manifest.canonical_bytes()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Tiny Test"),
        ("name", "../escape"),
        ("version", ""),
        ("context_length", 0),
        ("schema_version", 2),
    ],
)
def test_invalid_top_level_values_are_rejected(model_dir: Path, field: str, value: object) -> None:
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    data[field] = value
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("sha256", "ABC"), ("sha256", "0" * 63), ("size", -1)],
)
def test_invalid_file_entries_are_rejected(model_dir: Path, field: str, value: object) -> None:
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    data["variants"][0]["files"][0][field] = value
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


def test_unknown_format_or_engine_is_rejected(model_dir: Path) -> None:
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    data["variants"][0]["format"] = "safetensors"
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)
    data["variants"][0]["format"] = "gguf"
    data["variants"][0]["engines"] = ["vllm"]
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)
