"""Telemetry queries (per device and fleet-wide) and the fleet summary; viewer role."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, AwareDatetime, BeforeValidator
from sqlmodel import Session

from controlplane import crud
from controlplane.api.deps import DeviceFilterDep, SessionDep, ViewerDep
from controlplane.errors import ApiError
from controlplane.telemetry_models import FleetSummary, TelemetrySeries
from controlplane.telemetry_reads import series
from controlplane.telemetry_store import to_utc
from controlplane.telemetry_summary import fleet_summary
from models.protocol import check_time_range, utcnow

router = APIRouter(tags=["telemetry"])

DEFAULT_SPAN = timedelta(hours=1)
TARGET_POINTS = 240  # automatic bucket width aims at about this many points
MAX_POINTS = 10_000

MAX_BUCKET_S = 10 * 366 * 86400

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("use an RFC 3339 time with its offset, e.g. 2026-11-30T12:00:00Z")
    return value


# RFC 3339 with an offset, between 1970 and 2200 (as device times are).
QueryTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(check_time_range)]
FromQuery = Annotated[
    QueryTime | None, Query(alias="from", description="start (RFC 3339); default: to - 1 h")
]
ToQuery = Annotated[QueryTime | None, Query(description="end, exclusive (RFC 3339); default: now")]
MetricQuery = Annotated[str, Query(description="tokens_per_s, ttft_ms, cpu_percent, ...")]
BucketQuery = Annotated[
    int | None,
    Query(gt=0, le=MAX_BUCKET_S, description="bucket width in seconds; default: about 240 points"),
]


@dataclass(frozen=True)
class SeriesQuery:
    """The query parameters every series endpoint takes, as sent."""

    start: datetime | None
    end: datetime | None
    metric: str
    bucket: int | None


# async: it only collects parameters, so a threadpool round trip would cost more than the work
async def series_query(
    start: FromQuery = None,
    to: ToQuery = None,
    metric: MetricQuery = "tokens_per_s",
    bucket: BucketQuery = None,
) -> SeriesQuery:
    """The `from`, `to`, `metric` and `bucket` query parameters of a series request."""
    return SeriesQuery(start=start, end=to, metric=metric, bucket=bucket)


SeriesQueryDep = Annotated[SeriesQuery, Depends(series_query)]


def _window(query: SeriesQuery) -> tuple[datetime, datetime, int]:
    end = to_utc(query.end) if query.end else utcnow()
    start = to_utc(query.start) if query.start else end - DEFAULT_SPAN
    span = (end - start).total_seconds()
    if span <= 0:
        raise ApiError(422, "validation_error", "`from` must be before `to`")
    bucket = query.bucket or max(1, math.ceil(span / TARGET_POINTS))
    if span / bucket > MAX_POINTS:
        raise ApiError(
            422,
            "validation_error",
            f"{int(span / bucket)} points are too many; "
            f"use bucket >= {math.ceil(span / MAX_POINTS)}",
        )
    return start, end, bucket


def _series(
    session: Session, query: SeriesQuery, *, device_id: str | None, ids: list[str] | None
) -> TelemetrySeries:
    begin, finish, width = _window(query)
    points = series(
        session, metric=query.metric, start=begin, end=finish, bucket_s=width, device_ids=ids
    )
    return TelemetrySeries(
        device_id=device_id,
        metric=query.metric,
        start=begin,
        end=finish,
        bucket_s=width,
        points=points,
    )


@router.get("/devices/{device_id}/telemetry", response_model=TelemetrySeries)
def device_telemetry(
    device_id: str, session: SessionDep, _viewer: ViewerDep, query: SeriesQueryDep
) -> TelemetrySeries:
    """One device's metric over time, bucketed (avg/min/max/sum/count per bucket)."""
    if not crud.device_exists(session, device_id=device_id):
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    return _series(session, query, device_id=device_id, ids=[device_id])


@router.get("/telemetry", response_model=TelemetrySeries)
def fleet_telemetry(
    session: SessionDep,
    _viewer: ViewerDep,
    query: SeriesQueryDep,
    where: DeviceFilterDep,
) -> TelemetrySeries:
    """A metric over every device matching the filters (all devices when none is given)."""
    ids = None if where == crud.DeviceFilter() else crud.matching_device_ids(session, where=where)
    return _series(session, query, device_id=None, ids=ids)


@router.get("/fleet/summary", response_model=FleetSummary)
def summary(session: SessionDep, _viewer: ViewerDep) -> FleetSummary:
    """Devices by class, engine, active model, agent version and health."""
    return fleet_summary(session, now=utcnow())
