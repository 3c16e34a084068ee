"""Reference models: deterministic generation, the cache and the public test key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.build.errors import BuildError
from models.errors import VerificationError
from models.keys import generate_key, key_id
from models.reference import GENERATOR_VERSION, build_reference, cached_reference, reference_key
from models.signing import verify_model_dir


def test_reference_key_is_the_pinned_public_test_key() -> None:
    assert key_id(reference_key()) == key_id(reference_key()) == PINNED_KEY_ID


def test_tokenizer_training_is_deterministic() -> None:
    from models.reference.tokenizer import train_tokenizer

    first, second = train_tokenizer(512), train_tokenizer(512)
    assert first.to_str() == second.to_str()
    assert first.get_vocab_size() == 512


def test_build_reference_copies_the_cache_without_rebuilding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = cached_reference("tiny")
    signed_at = (cache / "manifest.sig").stat().st_mtime_ns
    manifest = build_reference("tiny", tmp_path / "again")
    assert cached_reference("tiny") == cache
    assert (cache / "manifest.sig").stat().st_mtime_ns == signed_at
    assert (tmp_path / "again" / "hf" / "config.json").is_file()
    assert manifest.ref == f"edgefleet-ref-tiny:{GENERATOR_VERSION}"


def test_build_reference_signs_with_a_given_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    key = generate_key()
    build_reference("tiny", tmp_path / "mine", key=key)
    verify_model_dir(tmp_path / "mine", trusted=[key.public_key()])
    with pytest.raises(VerificationError):
        verify_model_dir(tmp_path / "mine", trusted=[reference_key().public_key()])


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="choose from tiny, mid"):
        build_reference("huge", tmp_path)


@pytest.mark.slow
def test_checkpoint_weights_are_reproducible(tiny_model_dir: Path, tmp_path: Path) -> None:
    from models.reference.checkpoint import write_checkpoint

    write_checkpoint("tiny", tmp_path / "hf")

    def digest(d: Path) -> str:
        return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()

    assert digest(tmp_path / "hf") == digest(tiny_model_dir / "hf")


PINNED_KEY_ID = "58f395d4cdd76193"  # public test key: AnNSUkpw884XbqpuENk+4kCBG+I0153tmh4UFRoVXgY=
