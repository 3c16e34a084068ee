"""Device commands in the database: create, record the answer, read."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from controlplane.command_models import DeviceCommand, DeviceCommandPublic
from controlplane.db_models import utcnow
from models.protocol import CommandResult


def create_command(
    session: Session, *, device_id: str, command: str, args: dict[str, Any], created_by: str
) -> DeviceCommand:
    """Store a new command (not yet answered) and commit it."""
    row = DeviceCommand(
        request_id=f"cmd-{secrets.token_hex(8)}",
        device_id=device_id,
        command=command,
        args=args,
        created_by=created_by,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def record_command_result(
    session: Session, *, device_id: str, result: CommandResult, answered_at: datetime | None = None
) -> bool:
    """Store a device's answer; only the first answer, and only from the addressed device."""
    outcome = session.execute(
        update(DeviceCommand)
        .where(col(DeviceCommand.request_id) == result.request_id)
        .where(col(DeviceCommand.device_id) == device_id)
        .where(col(DeviceCommand.answered_at).is_(None))
        .values(
            answered_at=answered_at or utcnow(),
            ok=result.ok,
            result=result.result,
            error=result.error,
        )
    )
    return bool(getattr(outcome, "rowcount", 0))


def get_command(session: Session, *, request_id: str) -> DeviceCommand | None:
    """One command by its request id."""
    return session.get(DeviceCommand, request_id)


def list_commands(session: Session, *, device_id: str, limit: int = 100) -> list[DeviceCommand]:
    """A device's commands, newest first."""
    query = (
        select(DeviceCommand)
        .where(col(DeviceCommand.device_id) == device_id)
        .order_by(col(DeviceCommand.created_at).desc(), col(DeviceCommand.request_id).desc())
        .limit(limit)
    )
    return list(session.exec(query).all())


def command_to_public(row: DeviceCommand) -> DeviceCommandPublic:
    """The API view of a command."""
    status = "pending" if row.answered_at is None else ("succeeded" if row.ok else "failed")
    return DeviceCommandPublic.model_validate({**row.model_dump(), "status": status})
