"""Ed25519 signatures over model manifests, and verification of a model directory's files."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from models.errors import VerificationError
from models.files import atomic_write_bytes, hash_file, safe_relative_path
from models.keys import (
    key_id,
    public_key_b64,
)
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, FileEntry, Manifest

_LOGGER = logging.getLogger(__name__)


class ManifestSignature(BaseModel):
    """The content of `manifest.sig`: who signed the canonical manifest bytes, and the signature."""

    key_id: str
    algorithm: Literal["ed25519"] = "ed25519"
    signature: str
    public_key: str


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> ManifestSignature:
    """Sign the manifest's canonical bytes."""
    return ManifestSignature(
        key_id=key_id(key),
        signature=base64.b64encode(key.sign(manifest.canonical_bytes())).decode(),
        public_key=public_key_b64(key),
    )


def write_signed_manifest(model_dir: Path, manifest: Manifest, key: Ed25519PrivateKey) -> None:
    """Write manifest.json (indented) and manifest.sig into `model_dir`, each atomically."""
    signature = sign_manifest(manifest, key)
    atomic_write_bytes(
        model_dir / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode()
    )
    atomic_write_bytes(
        model_dir / SIGNATURE_FILE, (signature.model_dump_json(indent=2) + "\n").encode()
    )


def file_entry(model_dir: Path, rel_path: str | Path) -> FileEntry:
    """The manifest entry (path, sha256, size) for one file of a model directory."""
    rel = PurePosixPath(Path(rel_path).as_posix())
    sha, size = hash_file(model_dir / rel)
    return FileEntry(path=str(rel), sha256=sha, size=size)


def _read_signed(model_dir: Path) -> tuple[Manifest, ManifestSignature]:
    sig_path, manifest_path = model_dir / SIGNATURE_FILE, model_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise VerificationError(f"{MANIFEST_FILE} missing: {model_dir} is not a model directory")
    if not sig_path.is_file():
        raise VerificationError(f"{SIGNATURE_FILE} missing: model is unsigned")
    try:
        manifest = Manifest.load(model_dir)
    except (ValidationError, ValueError, OSError) as exc:
        raise VerificationError(f"{MANIFEST_FILE} is not a valid manifest: {exc}") from exc
    try:
        signature = ManifestSignature.model_validate_json(sig_path.read_bytes())
    except (ValidationError, ValueError, OSError) as exc:
        raise VerificationError(f"{SIGNATURE_FILE} is not a valid signature file") from exc
    return manifest, signature


def verify_manifest(model_dir: Path, trusted: Sequence[Ed25519PublicKey] | None) -> Manifest:
    """The manifest of `model_dir` if manifest.sig is a valid signature by a trusted key.

    `trusted=None` accepts the key embedded in manifest.sig (integrity only, not
    authenticity); devices always pass their trusted keys.
    """
    manifest, signature = _read_signed(model_dir)
    try:
        raw_sig = base64.b64decode(signature.signature, validate=True)
        embedded = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(signature.public_key, validate=True)
        )
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{SIGNATURE_FILE} is not a valid signature file") from exc
    if key_id(embedded) != signature.key_id:
        raise VerificationError(f"{SIGNATURE_FILE}: key id does not match its public key")
    if trusted is None:
        candidates = [embedded]
    else:
        candidates = [k for k in trusted if key_id(k) == signature.key_id]
        if not candidates:
            raise VerificationError(
                f"signature does not match any trusted key (key id {signature.key_id}); "
                "add the signer's public key with --trust or re-sign with a trusted key"
            )
    for pub in candidates:
        try:
            pub.verify(raw_sig, manifest.canonical_bytes())
            return manifest
        except InvalidSignature:
            continue
    raise VerificationError(
        f"signature does not match {MANIFEST_FILE} (key id {signature.key_id}): "
        "the manifest was changed after signing"
    )


def verify_files(model_dir: Path, files: Iterable[FileEntry]) -> None:
    """Check each listed file exists with the recorded size and sha256."""
    for entry in files:
        path = model_dir / safe_relative_path(entry.path)
        if not path.is_file():
            raise VerificationError(f"file {entry.path} missing")
        size = path.stat().st_size
        if size != entry.size:
            raise VerificationError(f"file {entry.path}: size {size} != {entry.size}")
        sha, _ = hash_file(path)
        if sha != entry.sha256:
            raise VerificationError(
                f"file {entry.path}: sha256 mismatch (expected {entry.sha256}, got {sha})"
            )


def verify_model_dir(
    model_dir: Path,
    trusted: Sequence[Ed25519PublicKey] | None = None,
    variant_ids: Sequence[str] | None = None,
) -> Manifest:
    """Verify the signature and every file (of the named variants only, when given)."""
    manifest = verify_manifest(model_dir, trusted)
    if variant_ids is None:
        variants = manifest.variants
    else:
        try:
            variants = [manifest.variant(v) for v in variant_ids]
        except KeyError as exc:
            raise VerificationError(str(exc.args[0])) from exc
    seen: dict[str, FileEntry] = {}
    for variant in variants:
        for entry in variant.files:
            seen.setdefault(entry.path, entry)
    verify_files(model_dir, seen.values())
    _LOGGER.debug("verified %s: %d files", manifest.ref, len(seen))
    return manifest
