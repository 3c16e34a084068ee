"""Signing keys: files written 0600, one key under races, trusted public keys in every form."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from models.errors import KeyFileError
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
