"""Liveness and ingestion health."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import text

from controlplane.api.deps import SessionDep
from controlplane.db_models import UtcDateTime
from controlplane.ingest_counters import totals

router = APIRouter(tags=["utils"])

INGEST_STALL_S = 60.0  # a message waiting this long to be written means ingestion is stuck


class IngestHealth(BaseModel):
    """The MQTT ingest path: connection, backlog and what it dropped."""

    mqtt_connected: bool
    database_ok: bool
    queued: int
    lag_s: float
    last_write_at: UtcDateTime | None
    since_start: dict[str, int]
    dropped_total: dict[str, int]


class Health(BaseModel):
    """`ok`, or `degraded` (answered 503) with the problems found."""

    status: Literal["ok", "degraded"]
    database: bool
    ingest: IngestHealth | None
    problems: list[str]


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "degraded: `problems` says why"}},
)
def health(request: Request, response: Response, session: SessionDep) -> Health:
    """Ok when the database answers and ingestion keeps up (no auth)."""
    problems: list[str] = []
    database = True
    try:
        session.execute(text("SELECT 1"))
        dropped = totals(session)
    except Exception:
        database, dropped = False, {}
        problems.append("the database does not answer")
    ingest = None
    bridge = getattr(request.app.state, "bridge", None)
    if bridge is not None:
        writer = bridge.writer_status()
        ingest = IngestHealth(
            mqtt_connected=bridge.connected.is_set(),
            database_ok=writer.database_ok,
            queued=writer.queued,
            lag_s=round(writer.lag_s, 3),
            last_write_at=writer.last_write_at,
            since_start=bridge.stats,
            dropped_total=dropped,
        )
        if not ingest.mqtt_connected:
            problems.append("the MQTT bridge is not connected to the broker")
        if not writer.database_ok:
            problems.append("telemetry writes are failing; messages wait at the broker")
        if writer.lag_s > INGEST_STALL_S:
            problems.append(f"ingestion is {writer.lag_s:.0f} s behind")
    if problems:
        response.status_code = 503
    return Health(
        status="degraded" if problems else "ok", database=database, ingest=ingest, problems=problems
    )
