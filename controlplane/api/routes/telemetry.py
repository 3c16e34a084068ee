"""Telemetry queries (per device and fleet-wide) and the fleet summary; viewer role."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from controlplane import crud
from controlplane.api.deps import SessionDep, ViewerDep
from controlplane.api.routes.devices import parse_selector
from controlplane.errors import ApiError
from controlplane.telemetry_models import FleetSummary, TelemetrySeries
from controlplane.telemetry_store import TelemetryQueryError, series, to_utc
from controlplane.telemetry_summary import fleet_summary
from models.protocol import utcnow

router = APIRouter(tags=["telemetry"])

DEFAULT_SPAN = timedelta(hours=1)
TARGET_POINTS = 240  # automatic bucket width aims at about this many points
MAX_POINTS = 10_000

FromQuery = Annotated[
    datetime | None, Query(alias="from", description="start (ISO 8601); default: to - 1 h")
]
ToQuery = Annotated[datetime | None, Query(description="end, exclusive (ISO 8601); default: now")]
MetricQuery = Annotated[str, Query(description="tokens_per_s, ttft_ms, cpu_percent, ...")]
BucketQuery = Annotated[
    int | None, Query(gt=0, description="bucket width in seconds; default: about 240 points")
]


def _window(
    start: datetime | None, end: datetime | None, bucket: int | None
) -> tuple[datetime, datetime, int]:
    end = to_utc(end) if end else utcnow()
    start = to_utc(start) if start else end - DEFAULT_SPAN
    span = (end - start).total_seconds()
    if span <= 0:
        raise ApiError(422, "validation_error", "`from` must be before `to`")
    bucket = bucket or max(1, math.ceil(span / TARGET_POINTS))
    if span / bucket > MAX_POINTS:
        raise ApiError(
            422, "validation_error",
            f"{int(span / bucket)} points are too many; "
            f"use bucket >= {math.ceil(span / MAX_POINTS)}",
        )
    return start, end, bucket


def _series(
    session: SessionDep, device_id: str | None, ids: list[str] | None, metric: str,
    start: datetime | None, end: datetime | None, bucket: int | None,
) -> TelemetrySeries:
    begin, finish, width = _window(start, end, bucket)
    try:
        points = series(
            session, metric=metric, start=begin, end=finish, bucket_s=width, device_ids=ids
        )
    except TelemetryQueryError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
    return TelemetrySeries(
        device_id=device_id, metric=metric, start=begin, end=finish, bucket_s=width, points=points
    )


@router.get("/devices/{device_id}/telemetry", response_model=TelemetrySeries)
def device_telemetry(
    device_id: str,
    session: SessionDep,
    _viewer: ViewerDep,
    start: FromQuery = None,
    to: ToQuery = None,
    metric: MetricQuery = "tokens_per_s",
    bucket: BucketQuery = None,
) -> TelemetrySeries:
    """One device's metric over time, bucketed (avg/min/max/sum/count per bucket)."""
    if not crud.device_exists(session, device_id=device_id):
        raise ApiError(404, "device_not_found", f"no device {device_id!r}")
    return _series(session, device_id, [device_id], metric, start, to, bucket)


@router.get("/telemetry", response_model=TelemetrySeries)
def fleet_telemetry(
    session: SessionDep,
    _viewer: ViewerDep,
    start: FromQuery = None,
    to: ToQuery = None,
    metric: MetricQuery = "tokens_per_s",
    bucket: BucketQuery = None,
    labels: str | None = None,
    device_class: str | None = None,
    model: str | None = None,
) -> TelemetrySeries:
    """A metric over every device matching the filters (all devices when none is given)."""
    ids = None
    if labels or device_class or model:
        ids = crud.matching_device_ids(
            session,
            labels=parse_selector(labels) if labels else None,
            device_class=device_class,
            model=model,
        )
    return _series(session, None, ids, metric, start, to, bucket)


@router.get("/fleet/summary", response_model=FleetSummary)
def summary(session: SessionDep, _viewer: ViewerDep) -> FleetSummary:
    """Devices by class, engine, active model, agent version and health."""
    return fleet_summary(session, now=utcnow())
