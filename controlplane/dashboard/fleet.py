"""Fleet performance pictures: tokens/s, TTFT and error rate over time, one line per model or
per hardware class."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlmodel import Session

from controlplane.api.deps import SessionDep
from controlplane.dashboard.embed import script_json
from controlplane.dashboard.routes import RANGES, Viewer, _page
from controlplane.db_models import Device
from controlplane.telemetry_models import TelemetryPoint
from controlplane.telemetry_reads import chart_window, grouped_metrics
from models.protocol import utcnow

router = APIRouter(include_in_schema=False)
MAX_GROUPS = 6  # lines per chart; the largest groups by device count
POINTS = 90
CHARTS = (
    ("tokens_per_s", "tokens/s (avg per device)"),
    ("ttft_ms", "TTFT ms (avg)"),
    ("error_rate", "errors per request"),
)


def _line(points: list[TelemetryPoint]) -> list[dict[str, Any]]:
    return [{"t": p.t.isoformat(), "avg": p.avg} for p in points]


def _error_rate(
    requests: list[TelemetryPoint], errors: list[TelemetryPoint]
) -> list[dict[str, Any]]:
    failed = {p.t: p.sum or 0.0 for p in errors}
    return [{"t": p.t.isoformat(), "avg": failed.get(p.t, 0.0) / p.sum} for p in requests if p.sum]


def group_counts(session: Session, column: str) -> dict[str, int]:
    """Devices (not revoked) per value of `column`, in one grouped query."""
    table: Any = Device.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        select(table.c[column], func.count())
        .where(table.c.revoked_at.is_(None))
        .group_by(table.c[column])
    )
    return {str(name): int(n) for name, n in rows if name}


def group_charts(session: Session, *, by: str, span: timedelta, now: datetime) -> list[str]:
    """One JSON chart per metric, with a series per group (model or device class): two
    grouped queries however many groups, devices and metrics."""
    column: Literal["active_model", "device_class"] = (
        "active_model" if by == "model" else "device_class"
    )
    counts = group_counts(session, column)
    groups = sorted(counts, key=lambda g: (-counts[g], g))[:MAX_GROUPS]
    bucket_s = max(60, int(span.total_seconds() // POINTS)) // 60 * 60  # whole minutes
    start, end = chart_window(now, span)
    data = grouped_metrics(
        session,
        metrics=("tokens_per_s", "ttft_ms", "requests", "errors"),
        start=start,
        end=end,
        bucket_s=bucket_s,
        group_by=column,
    )
    charts = []
    for metric, title in CHARTS:
        lines = []
        for g in groups:
            points = (
                _error_rate(data["requests"].get(g, []), data["errors"].get(g, []))
                if metric == "error_rate"
                else _line(data[metric].get(g, []))
            )
            lines.append({"name": f"{g} ({counts[g]})", "points": points})
        charts.append(script_json({"metric": title, "series": lines}))
    return charts


@router.get("/fleet")
def fleet_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    by: Annotated[str, Query(pattern="^(model|class)$")] = "model",
    window: Annotated[str, Query(alias="range")] = "6h",
) -> HTMLResponse:
    """Fleet tokens/s, TTFT and error rate over time per model or per hardware class."""
    window = window if window in RANGES else "6h"
    charts = group_charts(session, by=by, span=RANGES[window], now=utcnow())
    return _page(
        request,
        "fleet.html",
        viewer,
        charts=charts,
        by=by,
        ranges=list(RANGES),
        current_range=window,
    )
