"""Fleet-wide counts for the API and the dashboard: by class, engine, model, health."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, literal_column
from sqlalchemy import select as sa_select
from sqlmodel import Session

from controlplane.db_models import Device
from controlplane.telemetry_models import FleetSummary, TelemetrySample
from controlplane.telemetry_store import to_utc
from models.protocol import utcnow

STALE_AFTER = timedelta(minutes=10)  # online but silent this long: "stale"
ERROR_WINDOW = timedelta(minutes=15)  # errors reported this recently: "errors"
NONE = "none"
# A page reuses a summary this fresh: the live fleet counts refresh at the same interval.
SUMMARY_MAX_AGE_S = 2.0


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


def erring_devices(now: datetime) -> Select[Any]:
    """The ids of devices whose samples in the error window report errors (may repeat): a
    literal 0, so that the planner reads only ix_telemetry_sample_errors (WHERE errors > 0)."""
    samples: Any = TelemetrySample.__table__  # type: ignore[attr-defined]
    return sa_select(samples.c.device_id).where(
        samples.c.errors > literal_column("0"), samples.c.ts >= to_utc(now) - ERROR_WINDOW
    )


def devices_with_errors(session: Session, *, now: datetime) -> set[str]:
    """Devices whose samples in the error window report errors."""
    return set(session.execute(erring_devices(now)).scalars())


def fleet_summary(session: Session, *, now: datetime) -> FleetSummary:
    """Counts over every device that is not revoked, from one grouped query (reading each
    device's state as JSON took 200 ms at 10,000 devices; the groups are a handful)."""
    now = to_utc(now)
    table = Device.__table__  # type: ignore[attr-defined]
    erring = erring_devices(now)
    keys = (
        table.c.device_class,
        table.c.active_model,
        table.c.agent_version,
        table.c.state[("active", "engine")].as_string(),
        table.c.online,
        table.c.last_seen >= now - STALE_AFTER,  # NULL (never seen) counts as stale
        table.c.id.in_(erring),
    )
    query = sa_select(*keys, func.count()).where(table.c.revoked_at.is_(None)).group_by(*keys)
    by_class: Counter[str] = Counter()
    by_engine: Counter[str] = Counter()
    by_model: Counter[str] = Counter()
    by_health: Counter[str] = Counter()
    by_version: Counter[str] = Counter()
    total = online = 0
    for device_class, model, version, engine, is_online, fresh, errors, n in session.execute(query):
        total += n
        online += n if is_online else 0
        by_class[device_class or NONE] += n
        by_engine[engine if isinstance(engine, str) and engine else NONE] += n
        by_model[model or NONE] += n
        by_version[version or NONE] += n
        health = (
            "offline" if not is_online else "stale" if not fresh else "errors" if errors else "ok"
        )
        by_health[health] += n
    return FleetSummary(
        total=total,
        online=online,
        by_class=dict(by_class),
        by_engine=dict(by_engine),
        by_model=dict(by_model),
        by_health=dict(by_health),
        by_agent_version=dict(by_version),
    )


class SummaryCache:
    """The fleet summary for pages, read at most once per SUMMARY_MAX_AGE_S however many ask:
    one request runs the grouped query (60-90 ms at 10,000 devices, most of it reading each
    device's engine out of its state JSON) while the others wait for its answer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._summary: FleetSummary | None = None
        self._read_at = 0.0

    def get(self, session: Session) -> FleetSummary:
        """A summary at most SUMMARY_MAX_AGE_S old; read through `session` when there is none."""
        with self._lock:
            if self._summary is None or self._clock() - self._read_at >= SUMMARY_MAX_AGE_S:
                self._summary = fleet_summary(session, now=utcnow())
                self._read_at = self._clock()
            return self._summary
