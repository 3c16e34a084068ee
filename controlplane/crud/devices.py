"""Devices, their labels, their broker credentials and the state the MQTT bridge reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from controlplane.db_models import Device, DeviceLabel, DevicePublic, DeviceUpdate, as_utc, utcnow
from controlplane.security import hash_token


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
    device: Device | None = session.exec(
        select(Device).where(
            col(Device.artifact_token_hash) == hash_token(token), col(Device.revoked_at).is_(None)
        )
    ).first()
    return device


def device_labels(session: Session, *, device_ids: list[str]) -> dict[str, dict[str, str]]:
    """Labels of each device."""
    labels: dict[str, dict[str, str]] = {d: {} for d in device_ids}
    if device_ids:
        rows = session.exec(select(DeviceLabel).where(col(DeviceLabel.device_id).in_(device_ids)))
        for row in rows:
            labels[row.device_id][row.key] = row.value
    return labels


def list_devices(
    session: Session,
    *,
    labels: dict[str, str] | None = None,
    device_class: str | None = None,
    online: bool | None = None,
    model: str | None = None,
    include_revoked: bool = True,
) -> list[Device]:
    """Devices matching every filter; `model` is `name` or `name:version` of the active model."""
    query = select(Device).order_by(col(Device.enrolled_at), col(Device.id))
    for key, value in (labels or {}).items():
        query = query.where(
            col(Device.id).in_(
                select(DeviceLabel.device_id).where(
                    DeviceLabel.key == key, DeviceLabel.value == value
                )
            )
        )
    if device_class is not None:
        query = query.where(Device.device_class == device_class)
    if online is not None:
        query = query.where(Device.online == online)
    if model is not None:
        active = col(Device.active_model)
        query = query.where(active == model if ":" in model else active.startswith(f"{model}:"))
    if not include_revoked:
        query = query.where(col(Device.revoked_at).is_(None))
    return list(session.exec(query))


def device_to_public(device: Device, labels: dict[str, str]) -> DevicePublic:
    """The API view of a device (no credential hashes)."""
    return DevicePublic(
        id=device.id,
        name=device.name,
        device_class=device.device_class,
        agent_version=device.agent_version,
        labels=labels,
        hardware=device.hardware,
        state=device.state,
        online=device.online,
        last_seen=as_utc(device.last_seen) if device.last_seen else None,
        active_model=device.active_model,
        enrolled_at=as_utc(device.enrolled_at),
        revoked=device.revoked_at is not None,
    )


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


def mark_device_state(
    session: Session,
    *,
    device_id: str,
    online: bool,
    state: dict[str, Any],
    seen_at: datetime,
) -> Device | None:
    """Record a device's reported state (retained `state` or Last Will); None if unknown.

    `last_seen` never moves backwards; agent version, device class and active model come
    from the state when it carries them.
    """
    device = session.get(Device, device_id)
    if device is None:
        return None
    device.online = online
    device.state = state
    if device.last_seen is None or as_utc(device.last_seen) <= as_utc(seen_at):
        device.last_seen = seen_at
    if isinstance(state.get("agent_version"), str) and state["agent_version"]:
        device.agent_version = state["agent_version"]
    if isinstance(state.get("device_class"), str) and state["device_class"]:
        device.device_class = state["device_class"]
    if "active" in state:
        active = state["active"]
        device.active_model = (
            f"{active.get('name')}:{active.get('version')}" if isinstance(active, dict) else None
        )
    session.add(device)
    session.commit()
    session.refresh(device)
    return device


def broker_credentials(session: Session) -> dict[str, str]:
    """Username (device id) -> `$7$` password hash of every device not revoked."""
    rows = session.exec(
        select(Device.id, Device.mqtt_password_hash).where(col(Device.revoked_at).is_(None))
    )
    return dict(rows.all())
