"""Sending commands to devices over MQTT (`cmd`) and recording their answers (`cmd/result`).

`send_command` stores the command, then publishes it (QoS 1, not retained) through the bridge;
`run_command_results` is the lifespan service that records every `cmd/result` inside the
bridge writer's transaction, before the message is acknowledged to the broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from pydantic import BaseModel
from sqlmodel import Session

from controlplane import crud
from controlplane.command_models import DeviceCommand, DeviceCommandCreate
from controlplane.crud.commands import create_command, record_command_result
from controlplane.errors import ApiError, BridgeError
from controlplane.telemetry_ingest import Inbound
from models.protocol import Command, CommandResult, device_topic

_LOGGER = logging.getLogger(__name__)


class CommandPublisher(Protocol):
    """What sends a command: the bridge, or the CLI's own short connection."""

    connected: threading.Event

    def publish(self, topic: str, model: BaseModel, *, qos: int = 1, retain: bool = False) -> Any:
        """Publish `model` as JSON; BridgeError when it cannot go out."""
        ...


def send_command(
    session: Session,
    *,
    bridge: CommandPublisher | None,
    device_id: str,
    spec: DeviceCommandCreate,
    created_by: str,
) -> DeviceCommand:
    """Store the command and publish it to the device; ApiError when it cannot go out."""
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    if device.revoked_at is not None:
        why = f"device {device_id} is revoked; it can no longer receive commands"
        raise ApiError(409, "device_revoked", why)
    if bridge is None:
        why = "the MQTT bridge is off (EDGEFLEET_CP_MQTT_ENABLED=false); commands need it"
        raise ApiError(503, "mqtt_disabled", why)
    if not bridge.connected.is_set():
        why = "the control plane is not connected to the MQTT broker; retry shortly"
        raise ApiError(503, "broker_unavailable", why)
    row = create_command(
        session, device_id=device_id, command=spec.command, args=spec.args, created_by=created_by
    )
    message = Command(request_id=row.request_id, command=spec.command, args=spec.args)
    try:
        bridge.publish(device_topic(device_id, "cmd"), message, qos=1)
    except BridgeError as exc:
        record_command_result(
            session,
            device_id=device_id,
            result=CommandResult(request_id=row.request_id, ok=False, error=f"not sent: {exc}"),
        )
        session.commit()
        raise ApiError(503, "broker_unavailable", str(exc)) from exc
    return row


def record_command_results(session: Session, items: list[Inbound]) -> None:
    """Bridge recorder for `cmd/result`: store each answer in the batch's transaction."""
    for item in items:
        if not isinstance(item.message, CommandResult):
            continue
        if not record_command_result(session, device_id=item.device_id, result=item.message):
            _LOGGER.info(
                "ignored result %s from %s: unknown, answered or not its command",
                item.message.request_id,
                item.device_id,
            )


@asynccontextmanager
async def run_command_results(app: Any) -> AsyncIterator[None]:
    """Lifespan service: record `cmd/result` messages while the bridge runs."""
    bridge = getattr(app.state, "bridge", None)
    if bridge is not None:
        bridge.add_recorder(["cmd/result"], record_command_results)
    yield
