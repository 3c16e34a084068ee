"""Signing keys: files written 0600, one key under races, trusted public keys in every form."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from models import keys
from models.errors import KeyFileError


def test_key_round_trip_and_permissions(tmp_path: Path) -> None:
    key = keys.generate_key()
    path = tmp_path / "keys" / "signing.key"
    keys.save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.public_key_bytes(keys.load_private_key(path)) == keys.public_key_bytes(key)
    assert len(keys.public_key_bytes(key)) == 32
    assert len(keys.key_id(key)) == 16


def _create_key(path: str) -> str:
    return keys.key_id(keys.load_or_create_key(Path(path)))


def test_load_or_create_key_is_stable_under_races(tmp_path: Path) -> None:
    path = tmp_path / "k" / "signing.key"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        ids = pool.map(_create_key, [str(path)] * 4)
    assert len(set(ids)) == 1
    assert keys.key_id(keys.load_or_create_key(path)) == ids[0]


def test_default_key_path_follows_edgefleet_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    assert keys.default_key_path() == tmp_path / "keys" / "signing.key"


def test_public_keys_from_base64_file_pem_and_string(tmp_path: Path) -> None:
    a, b, c = keys.generate_key(), keys.generate_key(), keys.generate_key()
    listing = tmp_path / "trusted.pub"
    listing.write_text(
        f"# release keys\n{keys.public_key_b64(a)} release-2025\n\n{keys.public_key_b64(b)}\n"
    )
    pem = tmp_path / "c.pem"
    pem.write_bytes(
        c.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    trusted = keys.load_public_keys([listing, str(pem), keys.public_key_b64(a)])
    assert [keys.key_id(k) for k in trusted] == [
        keys.key_id(a),
        keys.key_id(b),
        keys.key_id(c),
        keys.key_id(a),
    ]


def test_bad_public_key_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("bm90IGEga2V5\n")
    with pytest.raises(KeyFileError, match="is not a base64 Ed25519 public key"):
        keys.load_public_keys([bad])
    with pytest.raises(KeyFileError, match="cannot read trusted key"):
        keys.load_public_keys([tmp_path / "absent.pub"])
