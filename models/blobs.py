"""Content-addressed blobs: atomic install, import, resumable fetch, locking and sweeping."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from models import files
from models.download import download, local_source
from models.errors import DownloadError, StoreError, VerificationError
from models.files import Progress

_LOGGER = logging.getLogger(__name__)

PARTIAL_MAX_AGE_S = 24 * 3600.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Blobs in `blobs/sha256/ab/abcd...`, partial writes in `tmp/`, lock files in `locks/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs, self.tmp, self.locks = root / "blobs" / "sha256", root / "tmp", root / "locks"
        for d in (self.blobs, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        with (self.locks / f"{name}.lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _using(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) by every writer so that `gc` (exclusive) never runs in between."""
        return self._lock("store", shared=True)

    # -- blobs -----------------------------------------------------------------------------
    def path(self, sha: str) -> Path:
        """Where the blob with this sha256 lives (whether or not it is present)."""
        if not _SHA_RE.match(sha):
            raise StoreError(f"{sha!r} is not a lowercase hex sha256")
        return self.blobs / sha[:2] / sha

    def has(self, sha: str) -> bool:
        """Whether the blob is present."""
        return self.path(sha).is_file()

    def _install(self, staged: Path, sha: str) -> Path:
        """Move a fully written, verified file into place (caller holds the blob lock)."""
        dest = self.path(sha)
        dest.parent.mkdir(exist_ok=True)
        os.chmod(staged, 0o444)  # hardlinked into model dirs: nobody should edit it in place
        os.replace(staged, dest)
        files.fsync_dir(dest.parent)
        return dest

    def _copy_in(self, src: BinaryIO, dest: Path, total: int, progress: Progress | None) -> str:
        """Copy `src` into a new file `dest`, fsynced; its sha256. Removes `dest` on failure."""
        digest, done = hashlib.sha256(), 0
        try:
            with dest.open("wb") as f:
                while chunk := src.read(files.HASH_CHUNK):
                    done = files.write_hashed(f, chunk, digest, done, total, progress)
                files.sync_file(f)
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise self._write_error(exc, dest) from exc
        return digest.hexdigest()

    def _write_error(self, exc: OSError, what: Path) -> StoreError:
        if exc.errno == errno.ENOSPC:
            return StoreError(f"disk full writing {what.name} into {self.root}: free space, retry")
        return StoreError(f"cannot write {what}: {exc.strerror or exc}")

    def import_file(self, src: Path, expected_sha: str | None = None) -> str:
        """Copy a local file into the store; its sha256 (must equal `expected_sha` when given)."""
        with self._using():
            if expected_sha and self.has(expected_sha):
                return expected_sha
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".import")
            os.close(fd)
            staged = Path(tmp_name)
            try:
                with src.open("rb") as f:
                    sha = self._copy_in(f, staged, src.stat().st_size, None)
            except OSError as exc:
                staged.unlink(missing_ok=True)
                raise StoreError(f"cannot read {src}: {exc.strerror or exc}") from exc
            if expected_sha and sha != expected_sha:
                staged.unlink(missing_ok=True)
                raise VerificationError(
                    f"file {src.name}: sha256 mismatch (expected {expected_sha}, got {sha})"
                )
            with self._lock(sha):
                if self.has(sha):
                    staged.unlink()
                else:
                    self._install(staged, sha)
            return sha

    def import_bytes(self, data: bytes) -> str:
        """Store a small in-memory blob (a manifest, a signature); its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        with self._using(), self._lock(sha):
            if not self.has(sha):
                fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".import")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    files.sync_file(f)
                self._install(Path(tmp_name), sha)
        return sha

    def fetch(
        self,
        url: str,
        sha256: str,
        size: int,
        *,
        headers: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """The blob's path, downloading it (resuming a partial one) or copying it if absent."""
        dest = self.path(sha256)
        with self._using(), self._lock(sha256):
            if dest.is_file():
                return dest
            local = local_source(url)
            partial = self.tmp / f"{sha256}.partial"
            if local is None:
                try:
                    got = download(url, partial, size, headers or {}, progress)
                except OSError as exc:
                    raise DownloadError(self._write_error(exc, partial).reason) from exc
            else:
                try:
                    with local.open("rb") as f:
                        got = self._copy_in(f, partial, size, progress)
                except FileNotFoundError as exc:
                    raise DownloadError(f"cannot fetch {url}: no such file") from exc
                except StoreError as exc:
                    raise DownloadError(exc.reason) from exc
            actual = partial.stat().st_size
            if actual != size:
                partial.unlink()
                raise DownloadError(f"{url}: size {actual} != {size}; the copy was deleted")
            if got != sha256:
                partial.unlink()
                raise DownloadError(
                    f"{url}: sha256 mismatch (expected {sha256}, got {got}); "
                    "the download was deleted"
                )
            _LOGGER.info("fetched %s (%d bytes) from %s", sha256[:12], size, url)
            return self._install(partial, sha256)

    def _sweep(self, live: set[str], partial_max_age_s: float) -> int:
        """Delete blobs not in `live`, crash leftovers in tmp/ and blob locks; bytes freed.

        The caller holds the exclusive store lock, so no writer is active.
        """
        freed = 0
        for blob in self.blobs.glob("*/*"):
            if blob.name not in live:
                st = blob.stat()
                freed += st.st_size if st.st_nlink == 1 else 0  # still linked elsewhere
                blob.unlink()
        # Every leftover in tmp/ is from a crash; only recent partials are worth a resume.
        cutoff = time.time() - partial_max_age_s
        for tmp in self.tmp.iterdir():
            st = tmp.lstat()
            if tmp.suffix == ".partial" and st.st_mtime >= cutoff:
                continue
            freed += st.st_size if tmp.is_file() else 0
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        for lock in self.locks.glob("*.lock"):
            if lock.name != "store.lock":  # blob locks are only taken under the store lock
                lock.unlink()
        return freed
