"""Devices, their labels, their broker credentials and the state the MQTT bridge reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from controlplane.crud.tokens import find_unrevoked
from controlplane.db_models import Device, DeviceLabel, DeviceUpdate, as_utc, utcnow

_DEVICE: Table = Device.__table__  # type: ignore[attr-defined]
# One statement for a whole batch of reported states (executemany).
_UPDATE_STATE = (
    update(_DEVICE)
    .where(_DEVICE.c.id == bindparam("b_id"))
    .values(
        online=bindparam("b_online"),
        state=bindparam("b_state", type_=_DEVICE.c.state.type),
        last_seen=bindparam("b_last_seen", type_=_DEVICE.c.last_seen.type),
        agent_version=bindparam("b_agent_version"),
        device_class=bindparam("b_device_class"),
        active_model=bindparam("b_active_model"),
    )
)


def create_device(
    session: Session,
    *,
    device_id: str,
    name: str,
    device_class: str,
    agent_version: str,
    hardware: dict[str, Any],
    labels: dict[str, str],
    mqtt_password_hash: str,
    artifact_token_hash: str,
) -> Device:
    """Add a device and its labels (not committed: enrollment commits with the token claim)."""
    device = Device(
        id=device_id,
        name=name,
        device_class=device_class,
        agent_version=agent_version,
        hardware=hardware,
        mqtt_password_hash=mqtt_password_hash,
        artifact_token_hash=artifact_token_hash,
    )
    session.add(device)
    session.flush()
    _replace_labels(session, device_id=device_id, labels=labels)
    return device


def _replace_labels(session: Session, *, device_id: str, labels: dict[str, str]) -> None:
    session.execute(delete(DeviceLabel).where(col(DeviceLabel.device_id) == device_id))
    session.add_all(DeviceLabel(device_id=device_id, key=k, value=v) for k, v in labels.items())
    session.flush()


def get_device(session: Session, *, device_id: str) -> Device | None:
    """The device with this id, revoked or not."""
    return session.get(Device, device_id)


def get_device_by_artifact_token(session: Session, *, token: str) -> Device | None:
    """The enrolled, not revoked device holding this artifact token."""
    return find_unrevoked(session, Device, hash_column=Device.artifact_token_hash, secret=token)


def update_device(session: Session, *, device: Device, update: DeviceUpdate) -> Device:
    """Apply a PATCH: a new name and/or a new full label set."""
    if update.name is not None:
        device.name = update.name
        session.add(device)
    if update.labels is not None:
        _replace_labels(session, device_id=device.id, labels=update.labels)
    session.commit()
    session.refresh(device)
    return device


def revoke_device(session: Session, *, device: Device) -> Device:
    """Revoke the device's credentials (the caller then rewrites the broker files)."""
    if device.revoked_at is None:
        device.revoked_at = utcnow()
        device.online = False
        session.add(device)
        session.commit()
        session.refresh(device)
    return device


def delete_device(session: Session, *, device: Device) -> None:
    """Remove the device and its labels."""
    session.execute(delete(DeviceLabel).where(col(DeviceLabel.device_id) == device.id))
    session.delete(device)
    session.commit()


@dataclass(frozen=True)
class StateReport:
    """One state a device reported (retained `state` or its Last Will), to be recorded."""

    device_id: str
    online: bool
    state: dict[str, Any]
    seen_at: datetime


def mark_device_states(session: Session, *, reports: Sequence[StateReport]) -> int:
    """Record many reported states with one SELECT and one executemany UPDATE (no commit).

    The last report of a device wins; `last_seen` never moves backwards; agent version,
    device class and active model come from the state when it carries them. Returns how
    many known devices were updated.
    """
    latest = {r.device_id: r for r in reports}
    if not latest:
        return 0
    stored = {
        row.id: row
        for row in session.execute(
            select_columns(
                _DEVICE.c.id,
                _DEVICE.c.last_seen,
                _DEVICE.c.agent_version,
                _DEVICE.c.device_class,
                _DEVICE.c.active_model,
            ).where(_DEVICE.c.id.in_(list(latest)))
        )
    }
    params = []
    for device_id, report in latest.items():
        row = stored.get(device_id)
        if row is None:
            continue
        state = report.state
        last_seen = row.last_seen
        if last_seen is None or as_utc(last_seen) <= as_utc(report.seen_at):
            last_seen = report.seen_at
        active_model = row.active_model
        if "active" in state:
            active = state["active"]
            named = isinstance(active, dict)
            active_model = f"{active.get('name')}:{active.get('version')}" if named else None
        params.append(
            {
                "b_id": device_id,
                "b_online": report.online,
                "b_state": state,
                "b_last_seen": last_seen,
                "b_active_model": active_model,
                "b_agent_version": _text(state.get("agent_version"), row.agent_version),
                "b_device_class": _text(state.get("device_class"), row.device_class),
            }
        )
    if params:
        session.execute(_UPDATE_STATE, params)
    return len(params)


def _text(reported: object, stored: str) -> str:
    return reported if isinstance(reported, str) and reported else stored


def broker_credentials(session: Session) -> dict[str, str]:
    """Username (device id) -> `$7$` password hash of every device not revoked."""
    rows = session.exec(
        select(Device.id, Device.mqtt_password_hash).where(col(Device.revoked_at).is_(None))
    )
    return dict(rows.all())
