"""Signing and verification: every way a model directory can be wrong is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.errors import VerificationError
from models.keys import generate_key, key_id
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from models.signing import (
    file_entry,
    sign_manifest,
    verify_manifest,
    verify_model_dir,
    write_signed_manifest,
)


def _refused(model_dir: Path, trusted: list[object] | None = None) -> str:
    with pytest.raises(VerificationError) as info:
        verify_model_dir(model_dir, trusted)  # type: ignore[arg-type]
    return info.value.reason


def test_signed_model_verifies_with_its_key(
    model_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    manifest = verify_model_dir(model_dir, [signing_key.public_key()])
    assert manifest.ref == "tiny-test:1.0"
    assert [v.id for v in manifest.variants] == ["gguf-q4_0", "onnx-fp16"]


def test_reformatted_manifest_json_still_verifies(
    model_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data, indent=7, sort_keys=False))
    assert verify_manifest(model_dir, [signing_key.public_key()]).name == "tiny-test"


def test_unsigned_model_is_refused(model_dir: Path) -> None:
    (model_dir / SIGNATURE_FILE).unlink()
    assert _refused(model_dir) == "manifest.sig missing: model is unsigned"


def test_changed_manifest_value_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    data["context_length"] = 4096
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data))
    reason = _refused(model_dir, [signing_key.public_key()])
    assert reason.startswith("signature does not match manifest.json")
    assert "changed after signing" in reason
    # Trusting the embedded key still requires the signature to hold.
    assert "changed after signing" in _refused(model_dir, None)


def test_changed_file_byte_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    target = model_dir / "gguf-q4_0" / "model.gguf"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x01
    target.write_bytes(bytes(data))
    reason = _refused(model_dir, [signing_key.public_key()])
    assert reason.startswith("file gguf-q4_0/model.gguf: sha256 mismatch (expected ")


def test_wrong_key_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    other = generate_key().public_key()
    reason = _refused(model_dir, [other])
    assert reason.startswith(
        f"signature does not match any trusted key (key id {key_id(signing_key)})"
    )


def test_resigned_by_attacker_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    # An attacker edits the manifest and re-signs it with their own key: integrity holds,
    # but the key is not trusted.
    manifest = Manifest.load(model_dir)
    manifest.context_length = 9999
    attacker = generate_key()
    forged = sign_manifest(manifest, attacker).model_copy(update={"key_id": key_id(signing_key)})
    (model_dir / MANIFEST_FILE).write_text(manifest.model_dump_json())
    (model_dir / SIGNATURE_FILE).write_text(forged.model_dump_json())
    reason = _refused(model_dir, [signing_key.public_key()])
    assert reason == "manifest.sig: key id does not match its public key"


def test_truncated_file_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    target = model_dir / "onnx-fp16" / "model.onnx"
    target.write_bytes(target.read_bytes()[:123])
    reason = _refused(model_dir, [signing_key.public_key()])
    assert reason == "file onnx-fp16/model.onnx: size 123 != 50000"


def test_missing_file_is_refused(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    (model_dir / "tokenizer.json").unlink()
    assert _refused(model_dir, [signing_key.public_key()]) == "file tokenizer.json missing"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b'{"key_id": "x"}',
        b'{"key_id": "x", "signature": "!!", "public_key": "AAAA"}',
    ],
)
def test_garbage_signature_file_is_refused(model_dir: Path, content: bytes) -> None:
    (model_dir / SIGNATURE_FILE).write_bytes(content)
    assert _refused(model_dir) == "manifest.sig is not a valid signature file"


def test_only_named_variants_are_checked(model_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    (model_dir / "onnx-fp16" / "model.onnx").unlink()
    trusted = [signing_key.public_key()]
    assert verify_model_dir(model_dir, trusted, ["gguf-q4_0"]).name == "tiny-test"
    with pytest.raises(VerificationError, match="file onnx-fp16/model.onnx missing"):
        verify_model_dir(model_dir, trusted, ["onnx-fp16"])
    with pytest.raises(VerificationError, match="has no variant 'trt'"):
        verify_model_dir(model_dir, trusted, ["trt"])


def test_path_escaping_the_model_dir_is_refused(
    model_dir: Path, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    manifest = Manifest.load(model_dir)
    manifest.variants[0].files.append(file_entry(tmp_path, "secret"))
    manifest.variants[0].files[-1].path = "../secret"
    write_signed_manifest(model_dir, manifest, signing_key)
    reason = _refused(model_dir, [signing_key.public_key()])
    assert reason == "file '../secret': path escapes the model directory"
