"""Fleet performance pictures: tokens/s, TTFT and error rate over time, one line per model or
per hardware class."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from controlplane import crud
from controlplane.api.deps import SessionDep
from controlplane.dashboard.routes import RANGES, Viewer, _page
from controlplane.telemetry_store import series
from controlplane.telemetry_summary import NONE, fleet_summary
from models.protocol import utcnow

router = APIRouter(include_in_schema=False)
MAX_GROUPS = 6  # lines per chart; the largest groups by device count
POINTS = 90
CHARTS = (("tokens_per_s", "tokens/s (avg per device)"), ("ttft_ms", "TTFT ms (avg)"),
          ("error_rate", "errors per request"))  # fmt: skip


def _points(session: Session, metric: str, ids: list[str], start: datetime, end: datetime,
            bucket_s: int) -> list[dict[str, Any]]:  # fmt: skip
    if metric != "error_rate":
        return [{"t": p.t.isoformat(), "avg": p.avg} for p in series(
            session, metric=metric, start=start, end=end, bucket_s=bucket_s, device_ids=ids)]
    requests = {p.t: p.sum for p in series(session, metric="requests", start=start, end=end,
                                           bucket_s=bucket_s, device_ids=ids)}  # fmt: skip
    errors = {p.t: p.sum for p in series(session, metric="errors", start=start, end=end,
                                         bucket_s=bucket_s, device_ids=ids)}  # fmt: skip
    return [{"t": t.isoformat(), "avg": (errors.get(t) or 0.0) / n}
            for t, n in sorted(requests.items()) if n]  # fmt: skip


def group_charts(session: Session, *, by: str, span: timedelta, now: datetime) -> list[str]:
    """One JSON chart per metric, with a series per group (model or device class)."""
    summary = fleet_summary(session, now=now)
    counts = summary.by_model if by == "model" else summary.by_class
    groups = sorted(counts, key=lambda g: (-counts[g], g))[:MAX_GROUPS]
    bucket_s = max(60, int(span.total_seconds() // POINTS))
    members = {
        g: crud.matching_device_ids(session, model=g if by == "model" else None,
                                    device_class=g if by == "class" else None)
        for g in groups if g != NONE
    }
    charts = []
    for metric, title in CHARTS:
        lines = [{"name": f"{g} ({counts[g]})",
                  "points": _points(session, metric, ids, now - span, now, bucket_s)}
                 for g, ids in members.items()]  # fmt: skip
        charts.append(json.dumps({"metric": title, "series": lines}).replace("</", "<\\/"))
    return charts


@router.get("/fleet")
def fleet_page(
    request: Request, session: SessionDep, viewer: Viewer,
    by: Annotated[str, Query(pattern="^(model|class)$")] = "model",
    window: Annotated[str, Query(alias="range")] = "6h",
) -> HTMLResponse:  # fmt: skip
    """Fleet tokens/s, TTFT and error rate over time per model or per hardware class."""
    window = window if window in RANGES else "6h"
    charts = group_charts(session, by=by, span=RANGES[window], now=utcnow())
    return _page(request, "fleet.html", viewer, charts=charts, by=by, ranges=list(RANGES),
                 current_range=window)  # fmt: skip
