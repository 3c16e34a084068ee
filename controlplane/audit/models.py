"""The audit table and its API schemas (Alembic revision 0007_audit_log owns the schema)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlmodel import Field, SQLModel

from controlplane.db_models import UtcDateTime, utcnow


class AuditEntryBase(SQLModel):
    at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)
    actor: str = Field(
        default="", max_length=100, index=True, description="the operator token's name"
    )
    actor_token_id: int | None = Field(default=None, description="the operator token's id")
    role: str = Field(default="", sa_type=String(16))
    source: str = Field(default="api", sa_type=String(16), description="api or dashboard")
    action: str = Field(max_length=100, index=True, description="e.g. pause_rollout")
    method: str = Field(sa_type=String(8))
    route: str = Field(max_length=300, description="the route template")
    target: str = Field(
        default="",
        max_length=300,
        index=True,
        description="what was acted on, e.g. rollout_id=ro-1a2b",
    )
    status: int = Field(description="the HTTP status answered")
    outcome: str = Field(sa_type=String(16), description="ok, refused or error")
    detail: str = Field(default="", max_length=300, description="the error code when refused")
    client: str = Field(default="", max_length=100, description="the caller's address")


class AuditEntry(AuditEntryBase, table=True):
    """One operator action; rows are only ever inserted (triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)


class AuditEntryPublic(AuditEntryBase):
    id: int
    at: UtcDateTime


class AuditPage(SQLModel):
    """One page, newest first; pass `next_before` as `before` for the next one."""

    items: list[AuditEntryPublic]
    next_before: int | None
