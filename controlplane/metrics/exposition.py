"""`GET /metrics`: the recorders plus fleet, rollout and ingest gauges read at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlmodel import Session

from controlplane.db_models import Device
from controlplane.ingest_counters import totals
from controlplane.metrics.recorders import ControlPlaneMetrics, RequestTimer
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.strategy import RolloutStatus

_LOGGER = logging.getLogger(__name__)
_ACTIVE = (
    RolloutStatus.SCHEDULED.value,
    RolloutStatus.RUNNING.value,
    RolloutStatus.PAUSED.value,
    RolloutStatus.WAITING_APPROVAL.value,
)


class FleetCollector(Collector):
    """Devices, rollouts and the MQTT ingest path, read when Prometheus scrapes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        """Nothing up front: the families are built at scrape time."""
        return []

    def collect(self) -> Iterator[Any]:
        """One aggregate query per family; a database error skips them and is counted."""
        up = GaugeMetricFamily("edgefleet_cp_database_up", "1 when the scrape could read the DB")
        try:
            with Session(self.app.state.engine) as session:
                families = list(_fleet(session)) + list(_rollouts(session))
                dropped = totals(session)
            up.add_metric([], 1)
        except Exception as exc:  # a scrape must answer even when the database does not
            _LOGGER.warning("metrics: database read failed: %s", type(exc).__name__)
            families, dropped = [], {}
            up.add_metric([], 0)
        yield up
        yield from families
        yield from _ingest(getattr(self.app.state, "bridge", None), dropped)


def _fleet(session: Session) -> Iterator[Any]:
    table: Any = Device.__table__  # type: ignore[attr-defined]
    state = GaugeMetricFamily("edgefleet_cp_devices", "Enrolled devices by state", labels=["state"])
    counts = {"online": 0, "offline": 0, "revoked": 0}
    query = select(table.c.online, table.c.revoked_at.is_(None), func.count()).group_by(
        table.c.online, table.c.revoked_at.is_(None)
    )
    for online, active, n in session.execute(query):
        counts["revoked" if not active else "online" if online else "offline"] += int(n)
    for name, n in counts.items():
        state.add_metric([name], n)
    yield state
    live = table.c.revoked_at.is_(None)
    model = GaugeMetricFamily(
        "edgefleet_cp_devices_by_model", "Devices (not revoked) by active model", labels=["model"]
    )
    for name, n in session.execute(
        select(table.c.active_model, func.count()).where(live).group_by(table.c.active_model)
    ):
        model.add_metric([name or "none"], int(n))
    yield model
    klass = GaugeMetricFamily(
        "edgefleet_cp_devices_by_class",
        "Devices (not revoked) by hardware class",
        labels=["device_class"],
    )
    for name, n in session.execute(
        select(table.c.device_class, func.count()).where(live).group_by(table.c.device_class)
    ):
        klass.add_metric([name or "none"], int(n))
    yield klass


def _rollouts(session: Session) -> Iterator[Any]:
    rollouts = GaugeMetricFamily("edgefleet_cp_rollouts", "Rollouts by status", labels=["status"])
    counts = {s.value: 0 for s in RolloutStatus}
    for status, n in session.execute(
        select(Rollout.status, func.count()).group_by(Rollout.status)  # type: ignore[call-overload]
    ):
        counts[str(status)] = int(n)
    for status, n in counts.items():
        rollouts.add_metric([status], n)
    yield rollouts
    devices = GaugeMetricFamily(
        "edgefleet_cp_rollout_devices",
        "Devices of unfinished rollouts by device state",
        labels=["state"],
    )
    query = (
        select(RolloutDevice.state, func.count())  # type: ignore[call-overload]
        .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
        .where(Rollout.status.in_(_ACTIVE))  # type: ignore[attr-defined]
        .group_by(RolloutDevice.state)
    )
    for state, n in session.execute(query):
        devices.add_metric([str(state)], int(n))
    yield devices


def _ingest(bridge: Any, dropped: dict[str, int]) -> Iterator[Any]:
    connected = GaugeMetricFamily(
        "edgefleet_cp_mqtt_connected", "1 while the MQTT bridge is connected to the broker"
    )
    connected.add_metric([], int(bridge is not None and bridge.connected.is_set()))
    yield connected
    persisted = CounterMetricFamily(
        "edgefleet_cp_ingest_dropped",
        "Device messages dropped since the database was created",
        labels=["reason"],
    )
    for reason, n in sorted(dropped.items()):
        persisted.add_metric([reason], n)
    yield persisted
    if bridge is None:
        return
    messages = CounterMetricFamily(
        "edgefleet_cp_mqtt_messages",
        "MQTT ingest events since this process started",
        labels=["outcome"],
    )
    for outcome, n in sorted(bridge.stats.items()):
        messages.add_metric([outcome], n)
    yield messages
    writer = bridge.writer_status()
    yield GaugeMetricFamily(
        "edgefleet_cp_ingest_queue_depth",
        "Messages received and not yet written",
        value=writer.queued,
    )
    yield GaugeMetricFamily(
        "edgefleet_cp_ingest_lag_seconds",
        "Age of the oldest message not yet written",
        value=writer.lag_s,
    )
    yield GaugeMetricFamily(
        "edgefleet_cp_ingest_database_ok",
        "0 while ingest writes fail",
        value=int(writer.database_ok),
    )


def install_metrics(app: FastAPI) -> ControlPlaneMetrics:
    """Time requests and DB writes of `app` and serve `GET /metrics` (no auth, no ids)."""
    metrics = ControlPlaneMetrics()
    metrics.watch_engine(app.state.engine)
    metrics.registry.register(FleetCollector(app))
    app.state.metrics = metrics
    app.add_middleware(RequestTimer, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text exposition format."""
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
