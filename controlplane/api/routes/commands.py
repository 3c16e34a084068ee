"""Device commands: send one (operator), list a device's, show one (viewer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controlplane import crud
from controlplane.api.deps import BridgeDep, OperatorDep, SessionDep, ViewerDep
from controlplane.api.errors import UNAVAILABLE
from controlplane.command_models import DeviceCommandCreate, DeviceCommandPublic
from controlplane.commands import send_command
from controlplane.crud.commands import command_to_public, get_command, list_commands
from controlplane.errors import ApiError

router = APIRouter(tags=["commands"])


@router.post(
    "/devices/{device_id}/commands",
    status_code=201,
    response_model=DeviceCommandPublic,
    responses=UNAVAILABLE,
)
def create_command(
    device_id: str,
    body: DeviceCommandCreate,
    bridge: BridgeDep,
    session: SessionDep,
    operator: OperatorDep,
) -> DeviceCommandPublic:
    """Send a command to the device; its answer fills in the command later."""
    row = send_command(
        session, bridge=bridge, device_id=device_id, spec=body, created_by=operator.name
    )
    return command_to_public(row)


@router.get("/devices/{device_id}/commands", response_model=list[DeviceCommandPublic])
def device_commands(
    device_id: str,
    session: SessionDep,
    _viewer: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many, newest first")] = 100,
) -> list[DeviceCommandPublic]:
    """The device's commands, newest first."""
    if not crud.device_exists(session, device_id=device_id):
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    return [command_to_public(r) for r in list_commands(session, device_id=device_id, limit=limit)]


@router.get("/commands/{request_id}", response_model=DeviceCommandPublic)
def show_command(request_id: str, session: SessionDep, _viewer: ViewerDep) -> DeviceCommandPublic:
    """One command with the device's answer (status pending until it comes)."""
    row = get_command(session, request_id=request_id)
    if row is None:
        raise ApiError(404, "command_not_found", f"no command {request_id!r}")
    return command_to_public(row)
