"""Signing and verification: every way a model directory can be wrong is refused with a reason."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.errors import KeyFileError, VerificationError
from models.keys import (
    default_key_path,
    generate_key,
    key_id,
    load_or_create_key,
    load_private_key,
    load_public_keys,
    public_key_b64,
    public_key_bytes,
    save_private_key,
)
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


def test_key_round_trip_and_permissions(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "signing.key"
    save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(key)
    assert len(public_key_bytes(key)) == 32
    assert len(key_id(key)) == 16


def _create_key(path: str) -> str:
    return key_id(load_or_create_key(Path(path)))


def test_load_or_create_key_is_stable_under_races(tmp_path: Path) -> None:
    path = tmp_path / "k" / "signing.key"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        ids = pool.map(_create_key, [str(path)] * 4)
    assert len(set(ids)) == 1
    assert key_id(load_or_create_key(path)) == ids[0]


def test_default_key_path_follows_edgefleet_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    assert default_key_path() == tmp_path / "keys" / "signing.key"


def test_public_keys_from_base64_file_pem_and_string(tmp_path: Path) -> None:
    a, b, c = generate_key(), generate_key(), generate_key()
    listing = tmp_path / "trusted.pub"
    listing.write_text(f"# release keys\n{public_key_b64(a)} release-2025\n\n{public_key_b64(b)}\n")
    pem = tmp_path / "c.pem"
    pem.write_bytes(
        c.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    keys = load_public_keys([listing, str(pem), public_key_b64(a)])
    assert [key_id(k) for k in keys] == [key_id(a), key_id(b), key_id(c), key_id(a)]


def test_bad_public_key_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("bm90IGEga2V5\n")
    with pytest.raises(KeyFileError, match="is not a base64 Ed25519 public key"):
        load_public_keys([bad])
    with pytest.raises(KeyFileError, match="cannot read trusted key"):
        load_public_keys([tmp_path / "absent.pub"])
