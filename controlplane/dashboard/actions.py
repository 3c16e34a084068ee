"""Dashboard actions on devices, enrollment and models (operator); the same crud calls as
the API routes, behind the same role, with CSRF protection and an audit entry each."""

from __future__ import annotations

import secrets
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from controlplane import crud
from controlplane.api.deps import SessionDep, SettingsDep, SigningDep
from controlplane.audit.trail import note_target
from controlplane.broker_sync import sync_broker
from controlplane.dashboard.auth import Operator, Uploader, check_csrf, install_refusals
from controlplane.dashboard.routes import _page
from controlplane.dashboard.session import CSRF_FIELD, flash
from controlplane.dashboard.upload import receive_upload
from controlplane.db_models import DeviceUpdate, parse_labels
from controlplane.errors import ControlPlaneError
from controlplane.registry import import_model, unpack_upload
from models.manifest import Manifest

router = APIRouter(include_in_schema=False)
ENROLL_TTLS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def _back(to: str, text: str, *, kind: str = "ok") -> Response:
    return flash(RedirectResponse(to, status_code=303), text, kind=kind)


def _relabel(labels: dict[str, str], add: str, remove: str) -> dict[str, str]:
    out = dict(labels)
    for key in filter(None, (k.strip() for k in remove.split(","))):
        out.pop(key, None)
    out.update(parse_labels(add))
    return out


@router.post("/devices/{device_id}/revoke")
def revoke_device(
    device_id: str, session: SessionDep, settings: SettingsDep, operator: Operator
) -> Response:
    """Revoke a device: the broker refuses it, its artifact token stops working."""
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        return _back("/devices", f"no device {device_id}", kind="error")
    crud.revoke_device(session, device=device)
    sync_broker(session, settings)
    return _back(f"/devices/{device_id}", f"{device_id} revoked; enroll it again to bring it back")


@router.post("/devices/{device_id}/labels")
def label_device(
    device_id: str,
    session: SessionDep,
    operator: Operator,
    labels: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace one device's labels (`k=v,k2=v2`)."""
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        return _back("/devices", f"no device {device_id}", kind="error")
    try:
        update = DeviceUpdate(labels=parse_labels(labels))
    except ValueError as exc:
        return _back(f"/devices/{device_id}", f"labels not changed: {exc}", kind="error")
    crud.update_device(session, device=device, update=update)
    return _back(f"/devices/{device_id}", f"labels of {device_id} saved")


@router.post("/devices/labels")
def label_devices(
    request: Request,
    session: SessionDep,
    operator: Operator,
    device_ids: Annotated[list[str], Form(max_length=1000)],
    add: Annotated[str, Form(max_length=2000)] = "",
    remove: Annotated[str, Form(max_length=2000)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/devices",
) -> Response:
    """Add and/or remove labels on every selected device."""
    back = back if back.startswith("/devices") else "/devices"
    changed = 0
    try:
        for device_id in device_ids:
            public = crud.get_public_device(session, device_id=device_id)
            device = crud.get_device(session, device_id=device_id)
            if public is None or device is None:
                continue
            update = DeviceUpdate(labels=_relabel(public.labels, add, remove))
            crud.update_device(session, device=device, update=update)
            changed += 1
    except ValueError as exc:
        return _back(back, f"labels not changed: {exc}", kind="error")
    note_target(request.state, f"{changed} devices: +{add} -{remove}")
    return _back(back, f"labels changed on {changed} device(s)")


@router.get("/enroll")
def enroll_form(request: Request, operator: Operator) -> HTMLResponse:
    """The form that makes a one-time enrollment token."""
    return _page(request, "enroll.html", operator, created=None, ttls=list(ENROLL_TTLS))


@router.post("/enroll")
def create_enrollment_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    operator: Operator,
    labels: Annotated[str, Form(max_length=2000)] = "",
    ttl: Annotated[str, Form(max_length=8)] = "1h",
) -> HTMLResponse:
    """Make a token and show it once, with the line to paste on the device."""
    try:
        parsed = parse_labels(labels)
    except ValueError as exc:
        return _page(
            request,
            "enroll.html",
            operator,
            status_code=422,
            created=None,
            ttls=list(ENROLL_TTLS),
            error=str(exc),
            labels=labels,
        )
    token, secret = crud.create_enrollment_token(
        session,
        labels=parsed,
        ttl=ENROLL_TTLS.get(ttl, ENROLL_TTLS["1h"]),
        created_by=operator.name,
    )
    note_target(request.state, f"enrollment_token={token.id}")
    command = (
        f"sudo EDGEFLEET_AGENT_CONTROL_PLANE_URL={settings.public_url} "
        f"EDGEFLEET_AGENT_ENROLLMENT_TOKEN={secret} edgefleet-agent serve"
    )
    response = _page(
        request,
        "enroll.html",
        operator,
        ttls=list(ENROLL_TTLS),
        created={
            "token": secret,
            "expires_at": token.expires_at,
            "labels": parsed,
            "command": command,
        },
    )
    response.headers["Cache-Control"] = "no-store"  # the secret must not stay in a cache
    return response


@router.post("/models/import")
def import_model_dir(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    signing: SigningDep,
    operator: Operator,
    path: Annotated[str, Form(min_length=1, max_length=4096)],
    resign: Annotated[bool, Form()] = False,
) -> Response:
    """Verify a model directory on the control plane host and register it."""
    try:
        manifest, _row = import_model(
            session, settings=settings, signing=signing, model_dir=Path(path.strip()), resign=resign
        )
    except ControlPlaneError as exc:
        return _back("/models", f"not imported: {exc.message}", kind="error")
    note_target(request.state, f"model={manifest.name}:{manifest.version}")
    return _back("/models", f"imported {manifest.name}:{manifest.version}")


@router.post("/models/upload")
async def upload_model(
    uploader: Uploader,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    signing: SigningDep,
) -> Response:
    """Import a model the browser sends: a .gguf, or a signed model directory as an archive.

    The file is streamed to <data_dir>/uploads (at most model_upload_max_bytes), imported
    off the event loop like a path import, and removed whatever the outcome.
    """
    session.close()  # no database connection is held while the file streams in
    work = settings.data_dir / "uploads" / secrets.token_hex(8)
    try:
        try:
            upload = await receive_upload(request, work, max_bytes=settings.model_upload_max_bytes)
        except ControlPlaneError as exc:
            return _back("/models", f"not imported: {exc.message}", kind="error")
        check_csrf(request, upload.fields.get(CSRF_FIELD, ""))

        def unpack_and_import() -> Manifest:
            assert upload.path is not None
            model_dir = unpack_upload(
                upload.path,
                upload.filename,
                signing=signing,
                max_bytes=settings.model_upload_max_bytes,
            )
            resign = upload.fields.get("resign") == "true"
            manifest, _row = import_model(
                session, settings=settings, signing=signing, model_dir=model_dir, resign=resign
            )
            return manifest

        try:
            manifest = await run_in_threadpool(unpack_and_import)
        except ControlPlaneError as exc:
            return _back("/models", f"{upload.filename} not imported: {exc.message}", kind="error")
    finally:
        await run_in_threadpool(shutil.rmtree, work, True)
    note_target(request.state, f"model={manifest.name}:{manifest.version}")
    return _back("/models", f"imported {manifest.name}:{manifest.version} from {upload.filename}")


def install_actions(app: FastAPI) -> None:
    """Add the action routes, the admin pages and the refusal page to `app`."""
    from controlplane.dashboard.admin import router as admin_router
    from controlplane.dashboard.fleet import router as fleet_router
    from controlplane.dashboard.live import router as live_router
    from controlplane.rollouts.dashboard_forms import router as rollout_forms

    install_refusals(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(rollout_forms)
    app.include_router(live_router)
    app.include_router(fleet_router)
