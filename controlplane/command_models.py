"""Device commands: what an operator asked a device to do and what it answered.

Alembic revision 0004_device_commands owns the schema; the protocol is `models.protocol.Command`
and `CommandResult` (docs/protocol.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, Column, DateTime, String, Text
from sqlmodel import Field, SQLModel

from controlplane.db_models import UtcDateTime, optional_time, utcnow

CommandName = Literal["benchmark", "reprobe", "restart-engine", "logs"]


class DeviceCommandCreate(SQLModel):
    """`POST /devices/{id}/commands`: the command and its arguments."""

    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)


class DeviceCommand(SQLModel, table=True):
    """One command sent to one device, with the device's answer once it came."""

    __tablename__ = "device_command"

    request_id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(max_length=64, index=True)
    command: str = Field(sa_type=String(32))
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: str = Field(default="", max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    answered_at: datetime | None = optional_time()
    ok: bool | None = None
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str = Field(default="", sa_type=Text)


class DeviceCommandPublic(SQLModel):
    """A command as the API shows it; `status` is pending, succeeded or failed."""

    request_id: str
    device_id: str
    command: str
    args: dict[str, Any]
    created_by: str
    created_at: UtcDateTime
    status: Literal["pending", "succeeded", "failed"]
    answered_at: UtcDateTime | None
    ok: bool | None
    result: dict[str, Any] | None
    error: str
