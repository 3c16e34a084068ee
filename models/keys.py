"""Ed25519 signing keys: where they live, generate, save, load, key ids, trusted public keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.errors import KeyFileError
from models.files import atomic_write_bytes, fsync_dir, sync_file

_LOGGER = logging.getLogger(__name__)


def edgefleet_home() -> Path:
    """$EDGEFLEET_HOME, or ~/.local/share/edgefleet."""
    env = os.environ.get("EDGEFLEET_HOME")
    return Path(env) if env else Path.home() / ".local" / "share" / "edgefleet"


def default_key_path() -> Path:
    """Where the signing key lives unless told otherwise: $EDGEFLEET_HOME/keys/signing.key."""
    return edgefleet_home() / "keys" / "signing.key"


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
            sync_file(f)
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
