"""Per-minute telemetry aggregates, written with the samples: telemetry_minute.

One row per (minute, device class, model) with count/sum/min/max of every metric. The
samples a batch actually stored (a resent batch stores none) are added up here in Python and
upserted in one statement, in the samples' transaction, so a chart never sees a sample
without its minute or the other way round. The class and model are the device's when the
sample is written (samples carry neither).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from controlplane.db_models import Device
from controlplane.telemetry_models import METRICS, TELEMETRY_MINUTE, minute_columns

MINUTE_S = 60
UPSERT_ROWS = 500  # rows per INSERT statement
Group = tuple[str, str]  # (device class, model); "" for none
_DEVICE = Device.__table__  # type: ignore[attr-defined]


def device_groups(session: Session, device_ids: Iterable[str]) -> dict[str, Group]:
    """Each device's (class, model) as the per-minute rows key them."""
    rows = session.execute(
        select(_DEVICE.c.id, _DEVICE.c.device_class, _DEVICE.c.active_model).where(
            _DEVICE.c.id.in_(list(set(device_ids)))
        )
    )
    return {device_id: (cls or "", model or "") for device_id, cls, model in rows}


def minute_rows(
    stored: Iterable[Sequence[Any]], groups: Mapping[str, Group]
) -> list[dict[str, Any]]:
    """telemetry_minute rows for samples given as (device_id, ts, *METRICS) tuples."""
    acc: dict[tuple[int, str, str], list[Any]] = {}
    for device_id, ts, *values in stored:
        aware = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts
        # Whole seconds first, as the SQL buckets do (unixepoch, floor(extract(epoch))).
        minute = int(aware.timestamp()) // MINUTE_S * MINUTE_S
        cls, model = groups.get(device_id, ("", ""))
        key = (minute, cls, model)
        aggs = acc.get(key)
        if aggs is None:
            aggs = acc[key] = [0, 0.0, None, None] * len(METRICS)
        for i, value in enumerate(values):
            if value is None:
                continue
            j = 4 * i
            aggs[j] += 1
            aggs[j + 1] += value
            aggs[j + 2] = value if aggs[j + 2] is None else min(aggs[j + 2], value)
            aggs[j + 3] = value if aggs[j + 3] is None else max(aggs[j + 3], value)
    rows = []
    for (minute, cls, model), aggs in acc.items():
        row: dict[str, Any] = {
            "minute": datetime.fromtimestamp(minute, tz=timezone.utc),
            "device_class": cls,
            "model": model,
        }
        for i, metric in enumerate(METRICS):
            count, total, low, high = minute_columns(metric)
            row[count], row[total] = aggs[4 * i], float(aggs[4 * i + 1])
            row[low] = None if aggs[4 * i + 2] is None else float(aggs[4 * i + 2])
            row[high] = None if aggs[4 * i + 3] is None else float(aggs[4 * i + 3])
        rows.append(row)
    return rows


def upsert_minutes(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add `rows` into telemetry_minute: one INSERT .. ON CONFLICT DO UPDATE for them all."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    ins = (sqlite if dialect == "sqlite" else postgresql).insert(TELEMETRY_MINUTE)
    old, new = TELEMETRY_MINUTE.c, ins.excluded
    merged: dict[str, Any] = {}
    for metric in METRICS:
        count, total, low, high = minute_columns(metric)
        merged[count] = old[count] + new[count]
        merged[total] = old[total] + new[total]
        merged[low] = case(
            (new[low].is_(None), old[low]),
            (old[low].is_(None) | (new[low] < old[low]), new[low]),
            else_=old[low],
        )
        merged[high] = case(
            (new[high].is_(None), old[high]),
            (old[high].is_(None) | (new[high] > old[high]), new[high]),
            else_=old[high],
        )
    stmt = ins.on_conflict_do_update(
        index_elements=["minute", "device_class", "model"], set_=merged
    )
    # A batch spans a minute or two; a backlog spanning hours goes in a few statements
    # (39 parameters a row: SQLite takes at most 32,766 in one).
    for start in range(0, len(rows), UPSERT_ROWS):
        session.execute(stmt.values(list(rows[start : start + UPSERT_ROWS])))
