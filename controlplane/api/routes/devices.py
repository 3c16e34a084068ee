"""The device registry: list with filters, get, relabel, revoke, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlmodel import Session

from controlplane import crud
from controlplane.api.deps import (
    DeviceFilterDep,
    OperatorDep,
    SessionDep,
    SettingsDep,
    ViewerDep,
)
from controlplane.broker_sync import sync_broker
from controlplane.db_models import Device, DevicePublic, DeviceUpdate
from controlplane.errors import ApiError
from models.protocol import INT32_MAX

router = APIRouter(prefix="/devices", tags=["devices"])

DEFAULT_PAGE = 100  # devices per GET /devices unless `limit` says otherwise
MAX_PAGE = 1000


def _public_or_404(session: Session, device_id: str) -> DevicePublic:
    device = crud.get_public_device(session, device_id=device_id)
    if device is None:
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    return device


def _device_or_404(session: Session, device_id: str) -> Device:
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    return device


@router.get("", response_model=list[DevicePublic])
def list_devices(
    session: SessionDep,
    _viewer: ViewerDep,
    where: DeviceFilterDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX, description="devices to skip")] = 0,
) -> list[DevicePublic]:
    """Devices matching every filter (`labels=k=v,k2=v2`, `model=name[:version]`), one page."""
    return crud.list_public_devices(session, where=where, limit=limit, offset=offset)


@router.get("/{device_id}", response_model=DevicePublic)
def get_device(device_id: str, session: SessionDep, _viewer: ViewerDep) -> DevicePublic:
    """One device."""
    return _public_or_404(session, device_id)


@router.patch("/{device_id}", response_model=DevicePublic)
def update_device(
    device_id: str, body: DeviceUpdate, session: SessionDep, _op: OperatorDep
) -> DevicePublic:
    """Rename and/or replace the device's labels."""
    device = crud.update_device(session, device=_device_or_404(session, device_id), update=body)
    return _public_or_404(session, device.id)


@router.post("/{device_id}/revoke", response_model=DevicePublic)
def revoke_device(
    device_id: str, session: SessionDep, settings: SettingsDep, _op: OperatorDep
) -> DevicePublic:
    """Revoke the device: the broker refuses it and artifact downloads get 401."""
    device = crud.revoke_device(session, device=_device_or_404(session, device_id))
    sync_broker(session, settings)
    return _public_or_404(session, device.id)


@router.delete("/{device_id}", status_code=204)
def delete_device(
    device_id: str, session: SessionDep, settings: SettingsDep, _op: OperatorDep
) -> Response:
    """Forget the device (and its broker credentials)."""
    crud.delete_device(session, device=_device_or_404(session, device_id))
    sync_broker(session, settings)
    return Response(status_code=204)
