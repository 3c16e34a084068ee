"""Per-device desired state: a version that only rises, stored before it is published."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, col, select

from controlplane.db_models import utcnow
from controlplane.rollouts.models import DeviceDesired
from models.protocol import DesiredModel, DesiredState, device_topic

_LOGGER = logging.getLogger(__name__)

# Publishes one retained QoS 1 message; returns None when it cannot be sent now, else a
# `confirm()` that waits for the broker's acknowledgement and says whether it came.
Confirm = Callable[[], bool]
PublishDesired = Callable[[str, DesiredState], "Confirm | None"]


def current(session: Session, device_id: str) -> DeviceDesired | None:
    """The device's stored desired state, if any."""
    return session.get(DeviceDesired, device_id)


def set_models(session: Session, device_id: str, models: list[DesiredModel]) -> DeviceDesired:
    """Store a new desired state for the device with the next version (caller commits)."""
    row = session.get(DeviceDesired, device_id)
    if row is None:
        row = DeviceDesired(device_id=device_id, version=0, models=[])
    row.version += 1
    row.models = [m.model_dump(mode="json") for m in models]
    row.updated_at = utcnow()
    session.add(row)
    return row


def message(row: DeviceDesired) -> DesiredState:
    """The wire message for a stored desired state."""
    return DesiredState(
        version=row.version, models=[DesiredModel.model_validate(m) for m in row.models]
    )


def publish_pending(session: Session, publish: PublishDesired, limit: int = 5000) -> int:
    """Publish every desired state the broker does not have yet; returns how many went out.

    Run every tick: a desired state stored while the broker was away goes out once it is back.
    """
    rows = session.exec(
        select(DeviceDesired)
        .where(col(DeviceDesired.published_version) < col(DeviceDesired.version))
        .limit(limit)
    ).all()
    in_flight: list[tuple[DeviceDesired, int, Confirm]] = []
    for row in rows:
        confirm = publish(device_topic(row.device_id, "desired"), message(row))
        if confirm is None:
            break
        in_flight.append((row, row.version, confirm))
    sent = 0
    for row, version, confirm in in_flight:  # pipelined: wait only after sending them all
        if confirm():
            row.published_version = version
            session.add(row)
            sent += 1
    if sent:
        session.commit()
        _LOGGER.debug("published %d desired states", sent)
    return sent


def models_of(row: DeviceDesired | None) -> list[dict[str, Any]]:
    """The stored models of a desired row (empty when the device never had one)."""
    return list(row.models) if row is not None else []
