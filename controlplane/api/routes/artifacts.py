"""Artifact downloads for enrolled devices: manifest, signature and files, with Range."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from controlplane import crud
from controlplane.api.deps import CurrentDevice, SessionDep, SettingsDep
from controlplane.api.downloads import open_download
from controlplane.api.ranges import ranged_file
from controlplane.db_models import ModelVersion
from controlplane.errors import ApiError
from controlplane.registry import artifact_store
from models.errors import StoreError
from models.manifest import Manifest

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


def _version_or_404(session: Session, name: str, version: str) -> ModelVersion:
    found = crud.get_model_version(session, name=name, version=version)
    if found is None:
        raise ApiError(404, "model_not_found", f"no model {name}:{version} in the registry")
    return found[1]


def _document(request: Request, text: str) -> Response:
    body = text.encode()
    etag = hashlib.sha256(body).hexdigest()
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match", "").strip('" ') == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/{name}/{version}/manifest.json")
def manifest_json(
    name: str, version: str, request: Request, session: SessionDep, _device: CurrentDevice
) -> Response:
    """The manifest exactly as imported (its signature covers the canonical form)."""
    return _document(request, _version_or_404(session, name, version).manifest_json)


@router.get("/{name}/{version}/manifest.sig")
def manifest_sig(
    name: str, version: str, request: Request, session: SessionDep, _device: CurrentDevice
) -> Response:
    """The manifest's signature (by the control plane's key unless imported as signed)."""
    return _document(request, _version_or_404(session, name, version).signature_json)


@router.get("/{name}/{version}/files/{path:path}")
def artifact_file(
    name: str,
    version: str,
    path: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    device: CurrentDevice,
) -> Response:
    """One file of the model, by its manifest path; Range requests give 206; 429 while the
    device has DOWNLOADS_PER_DEVICE open."""
    manifest = Manifest.model_validate_json(_version_or_404(session, name, version).manifest_json)
    entry = next((f for v in manifest.variants for f in v.files if f.path == path), None)
    if entry is None:
        raise ApiError(404, "file_not_found", f"model {manifest.ref} lists no file {path!r}")
    try:
        blob = artifact_store(settings).path(entry.sha256)
    except StoreError as exc:
        raise ApiError(404, "file_not_found", exc.reason) from exc
    if not blob.is_file():
        raise ApiError(
            404, "file_not_found", f"{path} of {manifest.ref} is missing from the store; re-import"
        )
    close = open_download(request, device.id)
    return ranged_file(request, blob, etag=entry.sha256, on_close=close)
