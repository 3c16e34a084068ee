"""Ed25519 signing and verification of model manifests and the files they list."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from models.errors import KeyFileError, VerificationError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, FileEntry, Manifest

_LOGGER = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


class ManifestSignature(BaseModel):
    """The content of `manifest.sig`: who signed the canonical manifest bytes, and the signature."""

    key_id: str
    algorithm: Literal["ed25519"] = "ed25519"
    signature: str
    public_key: str


def edgefleet_home() -> Path:
    """$EDGEFLEET_HOME, or ~/.local/share/edgefleet."""
    env = os.environ.get("EDGEFLEET_HOME")
    return Path(env) if env else Path.home() / ".local" / "share" / "edgefleet"


def default_key_path() -> Path:
    """Where the signing key lives unless told otherwise: $EDGEFLEET_HOME/keys/signing.key."""
    return edgefleet_home() / "keys" / "signing.key"


def fsync_dir(directory: Path) -> None:
    """Make a rename or link inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def generate_key() -> Ed25519PrivateKey:
    """A new random Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write `key` as unencrypted PKCS#8 PEM, mode 0600, atomically (replaces an existing file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, _private_pem(key), mode=0o600)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key written by `save_private_key`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the key at `path`, creating it first if absent (safe when processes race)."""
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_key()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp already made it 0600
            f.write(_private_pem(key))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another process created it first: then use theirs
    except FileExistsError:
        return load_private_key(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    _LOGGER.info("created signing key %s (key id %s)", path, key_id(key.public_key()))
    return key


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw public key in base64: the one-line form trusted-key files hold."""
    return base64.b64encode(public_key_bytes(key)).decode()


def key_id(pub: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the raw public key."""
    return hashlib.sha256(public_key_bytes(pub)).hexdigest()[:16]


def _parse_public_keys(text: str, origin: str) -> list[Ed25519PublicKey]:
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise KeyFileError(f"{origin}: not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{origin}: holds a {type(key).__name__}, not an Ed25519 key")
        return [key]
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            raw = base64.b64decode(line.split()[0], validate=True)
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError) as exc:
            raise KeyFileError(
                f"{origin}: {line[:20]!r} is not a base64 Ed25519 public key"
            ) from exc
    if not keys:
        raise KeyFileError(f"{origin}: no public key found")
    return keys


def load_public_keys(sources: Iterable[str | Path]) -> list[Ed25519PublicKey]:
    """Trusted keys from files or strings: base64 raw keys (one a line, # comments) or PEM."""
    keys: list[Ed25519PublicKey] = []
    for source in sources:
        path = Path(source)
        if isinstance(source, Path) or path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyFileError(f"cannot read trusted key {path}: {exc.strerror}") from exc
            keys.extend(_parse_public_keys(text, str(path)))
        else:
            keys.extend(_parse_public_keys(str(source), "public key string"))
    return keys


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


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_entry(model_dir: Path, rel_path: str | Path) -> FileEntry:
    """The manifest entry (path, sha256, size) for one file of a model directory."""
    rel = PurePosixPath(Path(rel_path).as_posix())
    sha, size = hash_file(model_dir / rel)
    return FileEntry(path=str(rel), sha256=sha, size=size)


def safe_relative_path(rel: str) -> PurePosixPath:
    """`rel` as a path that stays inside the model directory, or VerificationError."""
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise VerificationError(f"file {rel!r}: path escapes the model directory")
    return path


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
