"""The artifact store: signed model refs over content-addressed blobs, laid out for engines."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from models.blobs import PARTIAL_MAX_AGE_S, BlobStore
from models.errors import StoreError, VerificationError
from models.files import atomic_write_bytes, fsync_dir, safe_relative_path
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from models.signing import verify_manifest

_LOGGER = logging.getLogger(__name__)

STAGING_MAX_AGE_S = 3600.0  # a materialize leftover untouched this long is from a crash
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ModelRef(BaseModel):
    """What `refs/<name>/<version>.json` holds: the blobs of a model's manifest and signature."""

    name: str
    version: str
    manifest_sha256: str
    signature_sha256: str


def _newest_mtime(directory: Path) -> float:
    """The latest mtime of `directory` or anything in it (a long copy keeps touching its file)."""
    newest = directory.lstat().st_mtime
    for parent, dirs, names in os.walk(directory):
        for name in (*dirs, *names):
            newest = max(newest, (Path(parent) / name).lstat().st_mtime)
    return newest


def _remove_stale_staging(dest_dir: Path, max_age_s: float) -> None:
    """Delete the staging and set-aside directories a killed `materialize` left by `dest_dir`."""
    leftover = re.compile(rf"\.{re.escape(dest_dir.name)}\.(staging|old)-[^.]+")
    cutoff = time.time() - max_age_s
    for entry in dest_dir.parent.iterdir():
        if not leftover.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if _newest_mtime(entry) >= cutoff:
                continue  # recent: another process may be materializing right now
        except OSError:  # vanished while we looked: someone else cleaned it
            continue
        _LOGGER.info("removing %s, left by an interrupted materialize", entry)
        shutil.rmtree(entry, ignore_errors=True)


class ArtifactStore(BlobStore):
    """Blobs (see BlobStore) plus model refs in `refs/<name>/<version>.json`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.refs = root / "refs"
        self.refs.mkdir(parents=True, exist_ok=True)

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
        # Staging sits next to dest_dir (the final rename cannot cross filesystems), so the
        # store cannot sweep it in gc: each call clears what killed calls left for this dest.
        _remove_stale_staging(dest_dir, STAGING_MAX_AGE_S)
        staging = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}.staging-"))
        old: Path | None = None
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
            if dest_dir.exists():
                # A unique empty directory to rename over: a killed call's leftover (or a
                # reused pid) can never block the set-aside.
                old = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}.old-"))
                os.rename(dest_dir, old)
            os.rename(staging, dest_dir)
            fsync_dir(dest_dir.parent)
        except OSError as exc:
            self._discard(staging, old)
            raise self._write_error(exc, dest_dir) from exc
        except BaseException:
            self._discard(staging, old)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return dest_dir

    @staticmethod
    def _discard(staging: Path, old: Path | None) -> None:
        """Undo a failed materialize's staging, and its set-aside directory while still empty."""
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            with contextlib.suppress(OSError):  # not empty: it holds the previous dest_dir
                old.rmdir()

    def gc(self, keep: set[str] | None = None, partial_max_age_s: float = PARTIAL_MAX_AGE_S) -> int:
        """Delete blobs no ref (nor `keep`) points to and stale partials; bytes freed."""
        with self._lock("store"):
            live = set(keep or ())
            for ref in self.list_models():
                live |= {ref.manifest_sha256, ref.signature_sha256}
                manifest = self.manifest(ref.name, ref.version)
                live |= {f.sha256 for v in manifest.variants for f in v.files}
            freed = self._sweep(live, partial_max_age_s)
        _LOGGER.info("gc freed %d bytes in %s", freed, self.root)
        return freed
