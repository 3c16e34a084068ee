"""Drop and write-error counters of the MQTT ingest path, kept in the database.

The bridge counts in memory (`BridgeStats`); the counters operators must be able to trust
after a restart (messages dropped as invalid, over the device's budget, rejected, quarantined,
failed writes; samples dated in the future) are also added to the `ingest_counter` table, one
row per device and counter, by the writer thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from controlplane.db_models import UtcDateTime
from controlplane.telemetry_models import IngestCounter
from models import protocol

# Counters kept across restarts, and what each means to an operator; the rest (received,
# persisted, ...) are in memory only.
DROP_REASONS: dict[str, str] = {
    "invalid": "messages that failed validation (malformed, out of bounds, unknown topic)",
    "throttled": "messages sent past the device's budget (models/budget.py), dropped unread",
    "future_samples": "samples dated more than 5 minutes ahead of the control plane's clock",
    "rejected": "messages sent while the device was unknown or revoked",
    "quarantined": "messages the database refused",
    "write_errors": "batch writes that failed (retried)",
    "dropped": "messages not yet written when the control plane stopped (the broker resends)",
}
PERSISTED_COUNTERS = frozenset(DROP_REASONS)
_TABLE: Any = IngestCounter.__table__  # type: ignore[attr-defined]

CounterKey = tuple[str, str]  # (device id or "", counter)


class BridgeStats:
    """Thread-safe counters (`received`, `invalid`, `rejected`, `persisted`, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._unsaved: Counter[CounterKey] = Counter()

    def incr(self, key: str, amount: int = 1, *, device_id: str = "") -> None:
        """Add `amount` to counter `key` (and to the device's persisted count, if kept)."""
        if amount == 0:
            return
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount
            if key in PERSISTED_COUNTERS:
                self._unsaved[(device_id, key)] += amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def take_unsaved(self) -> Counter[CounterKey]:
        """The increments not yet in the database, handed over (and forgotten here)."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, Counter()
            return unsaved

    def give_back(self, unsaved: Counter[CounterKey]) -> None:
        """Keep increments whose save failed, for the next try."""
        with self._lock:
            self._unsaved.update(unsaved)


def save_counts(engine: Engine, counts: Counter[CounterKey]) -> None:
    """Add the counts to their rows in one transaction (insert or increment)."""
    if not counts:
        return
    now = protocol.utcnow()
    rows = [
        {"device_id": device_id, "counter": counter, "count": amount, "last_at": now}
        for (device_id, counter), amount in sorted(counts.items())
    ]
    dialect = engine.dialect.name
    ins: Any = postgresql.insert(_TABLE) if dialect == "postgresql" else sqlite.insert(_TABLE)
    stmt = ins.on_conflict_do_update(
        index_elements=["device_id", "counter"],
        set_={
            "count": _TABLE.c["count"] + ins.excluded["count"],
            "last_at": ins.excluded["last_at"],
        },
    )
    with Session(engine) as session:
        session.execute(stmt, rows)
        session.commit()


def totals(session: Session) -> dict[str, int]:
    """Every persisted counter summed over devices."""
    query = select(_TABLE.c.counter, func.sum(_TABLE.c["count"])).group_by(_TABLE.c.counter)
    return {str(name): int(total) for name, total in session.execute(query)}


class IngestCounterPublic(SQLModel):
    """One device's count of one kind of dropped message."""

    device_id: str
    counter: str
    count: int
    last_at: UtcDateTime


def by_device(
    session: Session,
    *,
    limit: int,
    device_id: str | None = None,
    since: datetime | None = None,
) -> list[IngestCounterPublic]:
    """Per-device counters, highest count first; one device's, or those counted `since`."""
    query = select(_TABLE)  # device_id "": counts of whole batches (write_errors)
    if device_id is not None:
        query = query.where(_TABLE.c.device_id == device_id)
    if since is not None:
        query = query.where(_TABLE.c.last_at >= since)
    query = query.order_by(_TABLE.c["count"].desc(), _TABLE.c.device_id).limit(limit)
    rows = session.execute(query)
    return [IngestCounterPublic.model_validate(dict(row._mapping)) for row in rows]
