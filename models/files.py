"""Durable file writes, hashing and safe relative paths shared by signing and the store."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from models.errors import VerificationError

HASH_CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def write_chunk(f: BinaryIO, data: bytes) -> None:
    """Every byte the store writes goes through here (tests patch it to simulate a full disk)."""
    f.write(data)


def write_hashed(
    f: BinaryIO,
    chunk: bytes,
    digest: hashlib._Hash,
    done: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Write `chunk` and add it to `digest`; the bytes written so far (told to `progress`)."""
    write_chunk(f, chunk)
    digest.update(chunk)
    done += len(chunk)
    if progress:
        progress(done, total)
    return done


def sync_file(f: BinaryIO) -> None:
    """Flush and fsync an open file, so that what was written survives a crash."""
    f.flush()
    os.fsync(f.fileno())


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
            sync_file(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_symlink(link: Path, target: str | Path) -> None:
    """Point `link` at `target` (relative to the link's folder, or absolute) so that after a
    crash at any moment it is the old link or the new one, durably."""
    tmp = link.with_name(f".{link.name}-{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def safe_relative_path(rel: str) -> PurePosixPath:
    """`rel` as a path that stays inside the model directory, or VerificationError."""
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise VerificationError(f"file {rel!r}: path escapes the model directory")
    return path
