"""Model registry: import a signed model directory into the store and the database."""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path

from sqlmodel import Session

from controlplane import crud
from controlplane.core.config import Settings
from controlplane.db_models import ModelVersion
from controlplane.errors import ImportRefused, ModelVersionExists
from controlplane.signing_key import SigningIdentity
from models.errors import ModelsError
from models.keys import key_id
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from models.signing import ManifestSignature, sign_manifest, verify_manifest
from models.store import ArtifactStore

_LOGGER = logging.getLogger(__name__)


def artifact_store(settings: Settings) -> ArtifactStore:
    """The control plane's artifact store."""
    return ArtifactStore(settings.artifact_root)


def import_model(
    session: Session,
    *,
    settings: Settings,
    signing: SigningIdentity,
    model_dir: Path,
    resign: bool = False,
) -> tuple[Manifest, ModelVersion]:
    """Verify a signed model dir, copy its files into the store, record the version.

    Without `resign` the manifest must already be signed by a key the fleet trusts; with it,
    the control plane signs the (verified) manifest with its own key.
    """
    if not model_dir.is_dir():
        raise ImportRefused(f"{model_dir} is not a directory on the control plane host")
    store = artifact_store(settings)
    try:
        manifest = verify_manifest(model_dir, None)  # integrity; the signer is checked below
        signature = ManifestSignature.model_validate_json((model_dir / SIGNATURE_FILE).read_bytes())
        trusted_ids = {key_id(k) for k in signing.trusted}
        if not resign and signature.key_id not in trusted_ids:
            raise ImportRefused(
                f"{manifest.ref} is signed by key {signature.key_id}, which devices do not "
                f"trust (control plane key {signing.key_id}): import with resign to sign it "
                "with the control plane's key"
            )
        if resign:
            signature = sign_manifest(manifest, signing.private_key)
        manifest_bytes = (model_dir / MANIFEST_FILE).read_bytes()
        signature_bytes = signature.model_dump_json(indent=2).encode()
        if crud.get_model_version(session, name=manifest.name, version=manifest.version):
            raise ModelVersionExists(
                f"model {manifest.ref} is already registered; give the new build another version"
            )
        store.import_model_dir(model_dir, None)  # copies and checks every file's sha256
        if resign:
            store.add_manifest(manifest_bytes, signature_bytes, signing.trusted)
    except ModelsError as exc:
        raise ImportRefused(exc.reason) from exc
    row = crud.create_model_version(
        session,
        manifest=manifest,
        manifest_json=manifest_bytes.decode(),
        signature_json=signature_bytes.decode(),
        key_id=signature.key_id,
    )
    _LOGGER.info("imported %s from %s (key %s)", manifest.ref, model_dir, signature.key_id)
    return manifest, row


BUNDLE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def unpack_upload(upload: Path, filename: str, *, signing: SigningIdentity, max_bytes: int) -> Path:
    """The model directory an uploaded file holds, for `import_model`: a `.gguf` as it is (its
    metadata makes the manifest, signed with the control plane's key), or a signed model
    directory packed as .tar(.gz) or .zip. Work files go next to `upload`."""
    name = filename.lower()
    if name.endswith(".gguf"):
        return _gguf_model_dir(upload, upload.parent / "model", signing)
    if name.endswith(BUNDLE_SUFFIXES):
        unpacked = upload.parent / "bundle"
        _unpack(upload, unpacked, max_bytes=max_bytes)
        return _bundled_model_dir(unpacked)
    raise ImportRefused(
        f"{filename}: upload a .gguf file, or a signed model directory as "
        f"{', '.join(BUNDLE_SUFFIXES)}"
    )


def _gguf_model_dir(gguf_file: Path, out_dir: Path, signing: SigningIdentity) -> Path:
    try:
        from models.build.gguf_import import import_gguf
    except ImportError as exc:
        raise ImportRefused(
            "this control plane cannot read GGUF files (install edgefleet[build]); "
            "upload a signed model directory instead"
        ) from exc
    try:
        import_gguf(gguf_file, out_dir, signing.private_key, hardlink=True)
    except ModelsError as exc:
        raise ImportRefused(f"not a usable GGUF file: {exc.reason}") from exc
    return out_dir


def _unpack(archive: Path, into: Path, *, max_bytes: int) -> None:
    """Extract a .tar(.gz) or .zip holding regular files and folders only, at most `max_bytes`
    unpacked; nothing may land outside `into`."""
    too_big = ImportRefused(f"the bundle unpacks to more than {max_bytes} bytes")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                if sum(i.file_size for i in zf.infolist()) > max_bytes:
                    raise too_big
                zf.extractall(into)  # strips absolute paths and `..`
            return
        with tarfile.open(archive) as tar:
            if sum(m.size for m in tar.getmembers()) > max_bytes:
                raise too_big
            tar.extractall(into, filter="data")  # refuses links out, devices, `..`
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ImportRefused(f"the bundle cannot be unpacked: {exc}") from exc


def _bundled_model_dir(unpacked: Path) -> Path:
    """The model directory in a bundle: its top, or the one folder at its top."""
    if (unpacked / MANIFEST_FILE).is_file():
        return unpacked
    entries = list(unpacked.iterdir()) if unpacked.is_dir() else []
    if len(entries) == 1 and (entries[0] / MANIFEST_FILE).is_file():
        return entries[0]
    raise ImportRefused(
        f"the bundle holds no {MANIFEST_FILE}: pack a signed model directory "
        "(tar czf model.tar.gz -C built my-model-1.0)"
    )
