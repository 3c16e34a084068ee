"""Fleet-wide counts for the API and the dashboard: by class, engine, model, health."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from controlplane.db_models import Device
from controlplane.telemetry_models import FleetSummary, TelemetrySample
from controlplane.telemetry_store import to_utc

STALE_AFTER = timedelta(minutes=10)  # online but silent this long: "stale"
ERROR_WINDOW = timedelta(minutes=15)  # errors reported this recently: "errors"
NONE = "none"


def engine_of(state: dict[str, Any]) -> str:
    """The engine in a stored device state, or "none"."""
    active = state.get("active")
    if isinstance(active, dict) and isinstance(active.get("engine"), str):
        return str(active["engine"]) or NONE
    return NONE


def device_health(
    *, online: bool, last_seen: datetime | None, has_errors: bool, now: datetime
) -> str:
    """`offline`, `stale`, `errors` or `ok`."""
    if not online:
        return "offline"
    if last_seen is None or to_utc(last_seen) < now - STALE_AFTER:
        return "stale"
    return "errors" if has_errors else "ok"


def devices_with_errors(session: Session, *, now: datetime) -> set[str]:
    """Devices whose samples in the error window report errors."""
    query = (
        select(TelemetrySample.device_id)
        .where(col(TelemetrySample.ts) >= now - ERROR_WINDOW, col(TelemetrySample.errors) > 0)
        .distinct()
    )
    return set(session.exec(query))


def fleet_summary(session: Session, *, now: datetime) -> FleetSummary:
    """Counts over every device that is not revoked."""
    now = to_utc(now)
    erring = devices_with_errors(session, now=now)
    table = Device.__table__  # type: ignore[attr-defined]
    query = sa_select(
        table.c.id,
        table.c.device_class,
        table.c.online,
        table.c.last_seen,
        table.c.active_model,
        table.c.agent_version,
        table.c.state,
    ).where(table.c.revoked_at.is_(None))
    by_class: Counter[str] = Counter()
    by_engine: Counter[str] = Counter()
    by_model: Counter[str] = Counter()
    by_health: Counter[str] = Counter()
    by_version: Counter[str] = Counter()
    total = online = 0
    rows = session.execute(query)
    for device_id, device_class, is_online, last_seen, model, version, state in rows:
        total += 1
        online += bool(is_online)
        by_class[device_class or NONE] += 1
        by_engine[engine_of(state or {})] += 1
        by_model[model or NONE] += 1
        by_version[version or NONE] += 1
        by_health[
            device_health(
                online=is_online, last_seen=last_seen, has_errors=device_id in erring, now=now
            )
        ] += 1
    return FleetSummary(
        total=total,
        online=online,
        by_class=dict(by_class),
        by_engine=dict(by_engine),
        by_model=dict(by_model),
        by_health=dict(by_health),
        by_agent_version=dict(by_version),
    )
