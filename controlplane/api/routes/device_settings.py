"""Remote agent settings of one device: what the fleet wants it to run with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlmodel import SQLModel

from controlplane import crud
from controlplane.api.deps import OperatorDep, SessionDep, ViewerDep
from controlplane.errors import ApiError
from controlplane.rollouts import desired
from models.protocol import AgentSettings

router = APIRouter(prefix="/devices", tags=["devices"])


class DeviceSettingsPublic(SQLModel):
    """The settings sent to the device (None: its own) and what the device last reported."""

    device_id: str
    settings: AgentSettings | None
    desired_version: int
    reported: dict[str, Any] | None = None  # in effect on the device, from its state
    reported_error: str = ""  # why the device refused the last settings


def _device_or_404(session: SessionDep, device_id: str) -> None:
    if crud.get_device(session, device_id=device_id) is None:
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")


def _public(session: SessionDep, device_id: str) -> DeviceSettingsPublic:
    row = desired.current(session, device_id)
    wanted = AgentSettings.model_validate(row.settings) if row and row.settings else None
    device = crud.get_device(session, device_id=device_id)
    state = device.state if device is not None else {}
    reported = state.get("settings") if isinstance(state.get("settings"), dict) else None
    return DeviceSettingsPublic(
        device_id=device_id,
        settings=wanted,
        desired_version=row.version if row else 0,
        reported=reported,
        reported_error=str(state.get("settings_error") or ""),
    )


@router.get("/{device_id}/settings", response_model=DeviceSettingsPublic)
def get_settings(device_id: str, session: SessionDep, _viewer: ViewerDep) -> DeviceSettingsPublic:
    """The agent settings the fleet wants on this device (the device reports what it runs)."""
    _device_or_404(session, device_id)
    return _public(session, device_id)


@router.put("/{device_id}/settings", response_model=DeviceSettingsPublic)
def put_settings(
    device_id: str, body: AgentSettings, session: SessionDep, _operator: OperatorDep
) -> DeviceSettingsPublic:
    """Send new agent settings; the device applies them whole or refuses them whole."""
    _device_or_404(session, device_id)
    desired.set_settings(session, device_id, body)
    session.commit()
    return _public(session, device_id)


@router.delete("/{device_id}/settings", response_model=DeviceSettingsPublic)
def clear_settings(
    device_id: str, session: SessionDep, _operator: OperatorDep
) -> DeviceSettingsPublic:
    """Drop the fleet's settings: the device goes back to its own."""
    _device_or_404(session, device_id)
    desired.set_settings(session, device_id, None)
    session.commit()
    return _public(session, device_id)
