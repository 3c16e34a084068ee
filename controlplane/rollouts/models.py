"""Rollout tables and API schemas (Alembic revisions 0003, 0006, 0008 and 0009 of the rollouts
branch)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, Text
from sqlmodel import Field, SQLModel

from controlplane.db_models import UtcDateTime, optional_time, utcnow
from controlplane.rollouts.strategy import Selector, Strategy


class Rollout(SQLModel, table=True):
    """One model version (or agent release) going out to the devices a selector matches."""

    __tablename__ = "rollout"

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(
        default="model", sa_type=String(16), sa_column_kwargs={"server_default": "model"}
    )
    model_name: str = Field(max_length=200, index=True)
    model_version: str = Field(max_length=100)
    manifest_url: str = Field(sa_type=Text)
    selector: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    strategy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="scheduled", sa_type=String(32), index=True)
    current_wave: int = 0
    reason: str = Field(default="", sa_type=Text)
    created_by: str = Field(default="", max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    started_at: datetime | None = optional_time()
    finished_at: datetime | None = optional_time()

    def parsed_strategy(self) -> Strategy:
        """The strategy as the pure rules take it."""
        return Strategy.model_validate(self.strategy)

    def parsed_selector(self) -> Selector:
        """The selector as the pure rules take it."""
        return Selector.model_validate(self.selector)


class RolloutDevice(SQLModel, table=True):
    """One device in one rollout."""

    __tablename__ = "rollout_device"
    # Progress (count by wave and state) reads this index alone: alembic 0008; the
    # dashboard's device pages (by wave and id) read the second: alembic 0009.
    __table_args__ = (
        Index("ix_rollout_device_progress", "rollout_id", "wave", "state"),
        Index("ix_rollout_device_page", "rollout_id", "wave", "device_id"),
    )

    rollout_id: str = Field(
        foreign_key="rollout.id", primary_key=True, ondelete="CASCADE", max_length=32
    )
    device_id: str = Field(primary_key=True, max_length=64, index=True)
    wave: int = 0
    state: str = Field(default="queued", sa_type=String(16), index=True)
    sub_status: str = Field(default="", max_length=32)
    detail: str = Field(default="", sa_type=Text)
    desired_version: int | None = None
    previous_models: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    dispatched_at: datetime | None = optional_time()
    activated_at: datetime | None = optional_time()  # start of its soak window
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class DeviceDesired(SQLModel, table=True):
    """The last desired state sent to a device, and whether the broker has it."""

    __tablename__ = "device_desired"

    device_id: str = Field(primary_key=True, max_length=64)
    version: int = 0
    models: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    agent: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    published_version: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ControllerLease(SQLModel, table=True):
    """Who drives rollouts, on databases without advisory locks (SQLite)."""

    __tablename__ = "rollout_lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=100)
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


# --- API schemas -------------------------------------------------------------------------
class RolloutCreate(SQLModel):
    """What an operator posts to start a rollout."""

    model: str = Field(
        default="", description="`name:version` of a model in the registry (or give `agent`)"
    )
    agent: str = Field(default="", description="an agent release version in the registry")
    selector: Selector = Field(default_factory=Selector)
    strategy: Strategy = Field(default_factory=Strategy)


class WaveProgress(SQLModel):
    """Counts of one wave."""

    index: int
    target: str
    devices: int
    queued: int
    in_progress: int
    succeeded: int
    failed: int


class RolloutPublic(SQLModel):
    """The API view of a rollout."""

    id: str
    kind: str = "model"
    model: str
    manifest_url: str
    selector: dict[str, Any]
    strategy: dict[str, Any]
    status: str
    current_wave: int
    reason: str
    created_by: str
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    waves: list[WaveProgress]
    counts: dict[str, int]


class RolloutDevicePublic(SQLModel):
    """The API view of one device in a rollout."""

    device_id: str
    wave: int
    state: str
    sub_status: str
    detail: str
    desired_version: int | None
    dispatched_at: UtcDateTime | None
    activated_at: UtcDateTime | None = None
    updated_at: UtcDateTime


class RolloutAction(SQLModel):
    """Body of pause/resume/abort/rollback (optional reason)."""

    reason: str = ""
