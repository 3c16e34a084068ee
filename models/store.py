"""The content-addressed artifact store: atomic, resumable, verified, safe for concurrent use."""

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from models.errors import DownloadError, StoreError, VerificationError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from models.signing import (
    HASH_CHUNK,
    atomic_write_bytes,
    fsync_dir,
    safe_relative_path,
    verify_manifest,
)

_LOGGER = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
PARTIAL_MAX_AGE_S = 24 * 3600.0
HTTP_TIMEOUT_S = 30.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ModelRef(BaseModel):
    """What `refs/<name>/<version>.json` holds: the blobs of a model's manifest and signature."""

    name: str
    version: str
    manifest_sha256: str
    signature_sha256: str


def _write_chunk(f: BinaryIO, data: bytes) -> None:
    """Every byte the store writes goes through here (tests patch it to simulate a full disk)."""
    f.write(data)


def _hash_prefix(path: Path) -> tuple[hashlib._Hash, int]:
    digest, done = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
    return digest, done


def _local_source(url: str) -> Path | None:
    """The path for file:// URLs and plain paths, None for http(s)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if len(parsed.scheme) <= 1:  # no scheme (or a Windows drive letter)
        return Path(url)
    raise DownloadError(f"cannot fetch {url!r}: only http, https, file URLs and paths work")


class ArtifactStore:
    """Blobs in `blobs/sha256/ab/abcd...`, partial writes in `tmp/`, model refs in `refs/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs, self.tmp = root / "blobs" / "sha256", root / "tmp"
        self.refs, self.locks = root / "refs", root / "locks"
        for d in (self.blobs, self.tmp, self.refs, self.locks):
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
        fsync_dir(dest.parent)
        return dest

    def _copy_in(self, src: BinaryIO, dest: Path, total: int, progress: Progress | None) -> str:
        """Copy `src` into a new file `dest`, fsynced; its sha256. Removes `dest` on failure."""
        digest, done = hashlib.sha256(), 0
        try:
            with dest.open("wb") as f:
                while chunk := src.read(HASH_CHUNK):
                    _write_chunk(f, chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                f.flush()
                os.fsync(f.fileno())
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
                    f.flush()
                    os.fsync(f.fileno())
                self._install(Path(tmp_name), sha)
        return sha

    # -- fetch -----------------------------------------------------------------------------
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
            local = _local_source(url)
            partial = self.tmp / f"{sha256}.partial"
            if local is None:
                got = self._download(url, partial, size, headers or {}, progress)
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

    def _download(
        self,
        url: str,
        partial: Path,
        size: int,
        headers: Mapping[str, str],
        progress: Progress | None,
    ) -> str:
        """Download into `partial`, resuming it; the sha256 of the whole file."""
        import httpx  # the agent extra; a build machine without it can still import the store

        offset = partial.stat().st_size if partial.exists() else 0
        if offset > size:
            partial.unlink()
            offset = 0
        digest, offset = _hash_prefix(partial) if offset else (hashlib.sha256(), 0)
        done = offset
        if offset == size:
            return digest.hexdigest()
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT_S) as client:
                with client.stream("GET", url, headers=request_headers) as resp:
                    start = self._resume_offset(
                        url, resp.status_code, resp.headers, offset, partial
                    )
                    if start == 0 and offset:
                        _LOGGER.info("%s ignored Range: downloading from the start", url)
                        digest, done = hashlib.sha256(), 0
                    with partial.open("ab" if start else "wb") as f:
                        for chunk in resp.iter_bytes():  # as received: a drop loses nothing
                            if done + len(chunk) > size:
                                partial.unlink()
                                raise DownloadError(f"{url}: server sent more than {size} bytes")
                            _write_chunk(f, chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, size)
                        f.flush()
                        os.fsync(f.fileno())
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"download of {url} stopped at {done} of {size} bytes ({exc}); run again to resume"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                partial.unlink(missing_ok=True)
            raise DownloadError(self._write_error(exc, partial).reason) from exc
        if done != size:
            raise DownloadError(
                f"download of {url} ended at {done} of {size} bytes; run again to resume"
            )
        return digest.hexdigest()

    @staticmethod
    def _resume_offset(
        url: str, resp_status: int, headers: Mapping[str, str], offset: int, partial: Path
    ) -> int:
        """Where the response body starts: `offset` for a matching 206, 0 for a 200."""
        if resp_status == 200:
            return 0
        if resp_status in (206, 416) and offset:
            match = re.match(r"bytes (\d+)-", headers.get("content-range", ""))
            if resp_status == 206 and match and int(match.group(1)) == offset:
                return offset
            partial.unlink()  # the server's file is not the one our partial came from
            raise DownloadError(
                f"{url}: server cannot resume at byte {offset} (HTTP {resp_status}); "
                "the partial download was deleted, run again"
            )
        hint = {401: "check the credentials", 403: "check the credentials", 404: "check the URL"}
        raise DownloadError(
            f"GET {url}: HTTP {resp_status}; {hint.get(resp_status, 'try again later')}"
        )

    # -- models ----------------------------------------------------------------------------
    def _ref_path(self, name: str, version: str) -> Path:
        if not _VERSION_RE.match(version) or not _VERSION_RE.match(name):
            raise StoreError(f"model {name}:{version}: name or version unfit for a file name")
        return self.refs / name / f"{version}.json"

    def add_manifest(
        self, manifest_json: bytes, signature: bytes, trusted: Sequence[Ed25519PublicKey] | None
    ) -> Manifest:
        """Verify a manifest + signature and record the model (its files may come later)."""
        with self._using(), tempfile.TemporaryDirectory(dir=self.tmp) as tmp:
            (Path(tmp) / MANIFEST_FILE).write_bytes(manifest_json)
            (Path(tmp) / SIGNATURE_FILE).write_bytes(signature)
            manifest = verify_manifest(Path(tmp), trusted)
            with self._lock(f"ref-{manifest.name}-{manifest.version}"):
                self._refuse_changed_version(manifest)
                ref = ModelRef(
                    name=manifest.name,
                    version=manifest.version,
                    manifest_sha256=self.import_bytes(manifest_json),
                    signature_sha256=self.import_bytes(signature),
                )
                atomic_write_bytes(
                    self._ref_path(ref.name, ref.version), ref.model_dump_json(indent=2).encode()
                )
        return manifest

    def _refuse_changed_version(self, manifest: Manifest) -> None:
        """A version is immutable: the same name:version must carry the same manifest."""
        if not self._ref_path(manifest.name, manifest.version).is_file():
            return
        if self.manifest(manifest.name, manifest.version).canonical_bytes() != (
            manifest.canonical_bytes()
        ):
            raise StoreError(
                f"{manifest.ref} is already in the store with a different manifest: "
                "give the new build another version, or remove the old one first"
            )

    def import_model_dir(
        self, model_dir: Path, trusted: Sequence[Ed25519PublicKey] | None = None
    ) -> Manifest:
        """Verify a model directory and copy all its files, manifest and signature in."""
        manifest = verify_manifest(model_dir, trusted)
        self._refuse_changed_version(manifest)  # before copying gigabytes
        with self._using():  # blobs imported before the ref exists must survive a gc
            for entry in {f.path: f for v in manifest.variants for f in v.files}.values():
                src = model_dir / safe_relative_path(entry.path)
                if not src.is_file():
                    raise VerificationError(f"file {entry.path} missing")
                if (size := src.stat().st_size) != entry.size:
                    raise VerificationError(f"file {entry.path}: size {size} != {entry.size}")
                try:
                    self.import_file(src, entry.sha256)
                except VerificationError as exc:
                    raise VerificationError(exc.reason.replace(src.name, entry.path, 1)) from exc
            self.add_manifest(
                (model_dir / MANIFEST_FILE).read_bytes(),
                (model_dir / SIGNATURE_FILE).read_bytes(),
                trusted,
            )
        _LOGGER.info("imported %s from %s", manifest.ref, model_dir)
        return manifest

    def ref(self, name: str, version: str) -> ModelRef:
        """The stored ref of a model, or StoreError."""
        path = self._ref_path(name, version)
        if not path.is_file():
            raise StoreError(f"model {name}:{version} is not in the store {self.root}")
        return ModelRef.model_validate_json(path.read_bytes())

    def manifest(self, name: str, version: str) -> Manifest:
        """The stored manifest of a model (verified when it was added)."""
        return Manifest.model_validate_json(
            self.path(self.ref(name, version).manifest_sha256).read_bytes()
        )

    def list_models(self) -> list[ModelRef]:
        """Every model recorded in the store, sorted by name then version."""
        refs = [ModelRef.model_validate_json(p.read_bytes()) for p in self.refs.glob("*/*.json")]
        return sorted(refs, key=lambda r: (r.name, r.version))

    def remove(self, name: str, version: str) -> None:
        """Forget a model; its blobs go at the next `gc`."""
        path = self._ref_path(name, version)
        if not path.is_file():
            raise StoreError(f"model {name}:{version} is not in the store {self.root}")
        with self._using():
            path.unlink()
            fsync_dir(path.parent)

    def materialize(self, manifest: Manifest, variant_id: str, dest_dir: Path) -> Path:
        """Lay out one variant as a model directory at `dest_dir`, which appears all at once."""
        ref = self.ref(manifest.name, manifest.version)
        try:
            variant = manifest.variant(variant_id)
        except KeyError as exc:
            raise StoreError(str(exc.args[0])) from exc
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}."))
        try:
            with self._using():
                for entry in variant.files:
                    blob = self.path(entry.sha256)
                    if not blob.is_file():
                        raise StoreError(
                            f"file {entry.path} of {manifest.ref} is not in the store: "
                            "fetch it first"
                        )
                    target = staging / safe_relative_path(entry.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(blob, target)
                    except OSError:  # another filesystem, or links not allowed: copy
                        shutil.copyfile(blob, target)
                shutil.copyfile(self.path(ref.manifest_sha256), staging / MANIFEST_FILE)
                shutil.copyfile(self.path(ref.signature_sha256), staging / SIGNATURE_FILE)
            fsync_dir(staging)
            old = None
            if dest_dir.exists():
                old = dest_dir.with_name(f".{dest_dir.name}.old-{os.getpid()}")
                os.rename(dest_dir, old)
            os.rename(staging, dest_dir)
            fsync_dir(dest_dir.parent)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise self._write_error(exc, dest_dir) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return dest_dir

    def gc(self, keep: set[str] | None = None, partial_max_age_s: float = PARTIAL_MAX_AGE_S) -> int:
        """Delete blobs no ref (nor `keep`) points to and stale partials; bytes freed."""
        freed = 0
        with self._lock("store"):
            live = set(keep or ())
            for ref in self.list_models():
                live |= {ref.manifest_sha256, ref.signature_sha256}
                manifest = self.manifest(ref.name, ref.version)
                live |= {f.sha256 for v in manifest.variants for f in v.files}
            for blob in self.blobs.glob("*/*"):
                if blob.name not in live:
                    st = blob.stat()
                    freed += st.st_size if st.st_nlink == 1 else 0  # still linked elsewhere
                    blob.unlink()
            # Under the exclusive lock no writer is active: every leftover in tmp/ is from a
            # crash, and only recent partials are worth keeping for a resume.
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
        _LOGGER.info("gc freed %d bytes in %s", freed, self.root)
        return freed
