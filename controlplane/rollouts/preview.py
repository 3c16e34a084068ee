"""Which devices a selector would target now: the controller's own query, for a form preview."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, select

from controlplane.db_models import Device
from controlplane.rollouts import driver
from controlplane.rollouts.models import Rollout
from controlplane.rollouts.strategy import Selector

PREVIEW_DEVICES = 20


class DevicePreview(SQLModel):
    """One device the selector matches."""

    id: str
    name: str
    device_class: str
    online: bool
    active_model: str | None


class SelectorPreview(SQLModel):
    """How many devices a selector matches, and the first few of them."""

    count: int
    online: int
    devices: list[DevicePreview]
    error: str = ""


def preview(
    session: Session, selector: Selector, *, limit: int = PREVIEW_DEVICES
) -> SelectorPreview:
    """Count the enrolled, not revoked devices `selector` matches (as a rollout would)."""
    probe = Rollout(
        id="preview",
        model_name="",
        model_version="",
        manifest_url="",
        selector=selector.model_dump(mode="json"),
    )
    matched = col(Device.id).in_(driver.matching_query(probe))
    count = session.exec(select(func.count()).select_from(Device).where(matched)).one()
    online = session.exec(
        select(func.count()).select_from(Device).where(matched, col(Device.online))
    ).one()
    table: Any = Device.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        sa_select(
            table.c.id, table.c.name, table.c.device_class, table.c.online, table.c.active_model
        )
        .where(matched)
        .order_by(table.c.id)
        .limit(limit)
    ).all()
    return SelectorPreview(
        count=count,
        online=online,
        devices=[
            DevicePreview(id=r[0], name=r[1], device_class=r[2], online=r[3], active_model=r[4])
            for r in rows
        ],
    )
