"""Dashboard: a device's recent logs (the `logs` command), linked from its page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from controlplane import crud
from controlplane.api.deps import BridgeDep, SessionDep
from controlplane.command_models import DeviceCommandCreate
from controlplane.commands import send_command
from controlplane.crud.commands import list_commands
from controlplane.dashboard.auth import Operator
from controlplane.dashboard.routes import Viewer, _page
from controlplane.dashboard.session import flash
from controlplane.errors import ControlPlaneError

router = APIRouter(include_in_schema=False)
LOG_WINDOW_S = 3600


@router.get("/devices/{device_id}/logs")
def device_logs(
    request: Request, session: SessionDep, viewer: Viewer, device_id: str
) -> HTMLResponse:
    """The latest `logs` answer of this device, newest line last."""
    if crud.get_device(session, device_id=device_id) is None:
        return _page(request, "missing.html", viewer, device_id=device_id)
    asked = [c for c in list_commands(session, device_id=device_id) if c.command == "logs"]
    latest = asked[0] if asked else None
    result: dict[str, Any] = (latest.result or {}) if latest is not None else {}
    lines = result.get("lines") or []
    return _page(
        request,
        "device_logs.html",
        viewer,
        device_id=device_id,
        command=latest,
        lines=lines,
        truncated=bool(result.get("truncated")),
    )


@router.post("/devices/{device_id}/logs")
def request_logs(
    device_id: str, bridge: BridgeDep, session: SessionDep, operator: Operator
) -> Response:
    """Ask the device for its last hour of INFO and above; the page shows the answer."""
    spec = DeviceCommandCreate(command="logs", args={"since_s": LOG_WINDOW_S, "level": "info"})
    to = RedirectResponse(f"/devices/{device_id}/logs", status_code=303)
    try:
        row = send_command(
            session, bridge=bridge, device_id=device_id, spec=spec, created_by=operator.name
        )
    except ControlPlaneError as exc:
        return flash(to, f"logs not requested: {exc.message}", kind="error")
    return flash(to, f"asked {device_id} for its logs ({row.request_id}); reload for the answer")
