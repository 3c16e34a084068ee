"""Telemetry store, retention rollup and query API on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.db_models import Role
from controlplane.telemetry_models import TelemetryHourly, TelemetrySample
from controlplane.telemetry_reads import series
from controlplane.telemetry_retention import run_retention
from controlplane.telemetry_store import insert_samples, sample_rows
from models import protocol
from tests.controlplane.helpers import bearer, enroll, report_model
from tests.controlplane.test_auth import assert_error

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def store(engine: Engine, device_id: str, seq: int, samples: list[tuple[datetime, float]]) -> int:
    batch = protocol.Telemetry(
        seq=seq,
        samples=[protocol.TelemetrySample(ts=ts, tokens_per_s=v, errors=0) for ts, v in samples],
    )
    with Session(engine) as session:
        new = insert_samples(session, sample_rows(device_id, batch))
        session.commit()
    return new


def count(engine: Engine, table: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def device_id(cp_client: TestClient, admin_headers: dict[str, str]) -> str:
    return str(enroll(cp_client, admin_headers, labels={"site": "lab"})["device_id"])


def test_resent_and_out_of_order_batches_are_stored_once(
    cp_client: TestClient, device_id: str
) -> None:
    engine = engine_of(cp_client)
    first = [(NOW, 10.0), (NOW + timedelta(seconds=10), 20.0)]
    later = [(NOW + timedelta(minutes=5), 30.0)]
    assert store(engine, device_id, 2, later) == 1  # arrives first
    assert store(engine, device_id, 1, first) == 2  # older batch arrives late: kept
    assert store(engine, device_id, 1, first) == 0  # resent: nothing new
    assert count(engine, TelemetrySample) == 3
    with Session(engine) as session:
        points = series(
            session,
            metric="tokens_per_s",
            start=NOW,
            end=NOW + timedelta(hours=1),
            bucket_s=60,
            device_ids=[device_id],
        )
    assert [(p.t.minute, p.count, p.avg) for p in points] == [(30, 2, 15.0), (35, 1, 30.0)]


def test_one_write_stores_a_sample_with_no_metrics_and_a_batch_seen_twice_once(
    cp_client: TestClient, device_id: str
) -> None:
    engine = engine_of(cp_client)
    bare = protocol.Telemetry(seq=7, samples=[protocol.TelemetrySample(ts=NOW)])
    full = protocol.Telemetry(
        seq=8, samples=[protocol.TelemetrySample(ts=NOW, tokens_per_s=5.0, mem_used_bytes=2**40)]
    )
    rows = sample_rows(device_id, bare) + sample_rows(device_id, full) * 2  # redelivered
    with Session(engine) as session:
        assert insert_samples(session, rows) == 2
        session.commit()
    with Session(engine) as session:
        stored = session.execute(
            select(
                TelemetrySample.seq, TelemetrySample.tokens_per_s, TelemetrySample.mem_used_bytes
            )
            .where(TelemetrySample.device_id == device_id)
            .order_by(TelemetrySample.seq)
        ).all()
    assert [tuple(r) for r in stored] == [(7, None, None), (8, 5.0, 2**40)]


def test_rollup_keeps_hourly_aggregates_and_deletes_old_raw_samples(
    cp_client: TestClient, device_id: str
) -> None:
    engine = engine_of(cp_client)
    old_hour = NOW - timedelta(hours=50)  # 10:30 two days ago: beyond 48 h
    store(engine, device_id, 1, [(old_hour, 10.0), (old_hour + timedelta(minutes=10), 30.0)])
    store(engine, device_id, 2, [(NOW - timedelta(hours=1), 50.0)])  # recent: stays raw
    result = run_retention(engine, keep=timedelta(hours=48), now=NOW)
    assert result.raw_deleted == 2
    assert result.cutoff == datetime(2026, 3, 8, 12, 0, tzinfo=timezone.utc)
    assert count(engine, TelemetrySample) == 1
    with Session(engine) as session:
        row = session.get(TelemetryHourly, (device_id, "tokens_per_s", old_hour.replace(minute=0)))
        assert row is not None
        assert (row.count, row.sum, row.min, row.max) == (2, 40.0, 10.0, 30.0)
        # A second pass finds nothing more to fold in.
        assert run_retention(engine, keep=timedelta(hours=48), now=NOW).raw_deleted == 0
        # Queries span both tables: the old hour comes from the aggregate.
        points = series(
            session,
            metric="tokens_per_s",
            start=NOW - timedelta(days=3),
            end=NOW,
            bucket_s=86400,
            device_ids=[device_id],
        )
    assert sum(p.count for p in points) == 3
    assert max(p.max or 0.0 for p in points) == 50.0


def test_rollup_merges_into_an_existing_hour(cp_client: TestClient, device_id: str) -> None:
    engine = engine_of(cp_client)
    hour = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    store(engine, device_id, 1, [(hour + timedelta(minutes=1), 5.0)])
    run_retention(engine, keep=timedelta(hours=48), now=NOW)
    store(engine, device_id, 2, [(hour + timedelta(minutes=2), 7.0)])  # late sample, same hour
    run_retention(engine, keep=timedelta(hours=48), now=NOW)
    with Session(engine) as session:
        row = session.get(TelemetryHourly, (device_id, "tokens_per_s", hour))
    assert row is not None and (row.count, row.sum, row.min, row.max) == (2, 12.0, 5.0, 7.0)


def test_device_and_fleet_queries(
    cp_client: TestClient,
    admin_headers: dict[str, str],
    device_id: str,
    make_token: Callable[[Role], str],
) -> None:
    other = str(enroll(cp_client, admin_headers, labels={"site": "home"})["device_id"])
    engine = engine_of(cp_client)
    now = protocol.utcnow()
    store(engine, device_id, 1, [(now - timedelta(minutes=5), 10.0)])
    store(engine, other, 1, [(now - timedelta(minutes=5), 30.0)])
    viewer = bearer(make_token(Role.viewer))

    resp = cp_client.get(
        f"/api/v1/devices/{device_id}/telemetry",
        headers=viewer,
        params={"metric": "tokens_per_s", "bucket": 3600},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["device_id"] == device_id and body["bucket_s"] == 3600
    assert sum(p["count"] for p in body["points"]) == 1

    fleet = cp_client.get("/api/v1/telemetry", headers=viewer, params={"bucket": 7200}).json()
    assert sum(p["count"] for p in fleet["points"]) == 2
    assert max(p["max"] for p in fleet["points"]) == 30.0
    lab = cp_client.get(
        "/api/v1/telemetry", headers=viewer, params={"bucket": 7200, "labels": "site=lab"}
    ).json()
    assert [p["max"] for p in lab["points"]] == [10.0]
    # the device list's filters, online included; no device has reported itself online
    empty = {"bucket": 7200, "labels": "", "device_class": "", "model": ""}  # as a form sends
    unfiltered = cp_client.get("/api/v1/telemetry", headers=viewer, params=empty).json()
    assert sum(p["count"] for p in unfiltered["points"]) == 2
    online = cp_client.get("/api/v1/telemetry", headers=viewer, params={"online": "true"})
    assert online.status_code == 200 and online.json()["points"] == []
    assert_error(
        cp_client.get("/api/v1/telemetry", headers=viewer, params={"labels": "site"}),
        422,
        "validation_error",
    )

    start = (now - timedelta(hours=2)).isoformat()
    ranged = cp_client.get(
        "/api/v1/telemetry", headers=viewer, params={"from": start, "to": now.isoformat()}
    )
    assert ranged.status_code == 200 and ranged.json()["bucket_s"] == 30  # 2 h / 240 points

    assert_error(
        cp_client.get("/api/v1/telemetry", params={"metric": "bogus"}, headers=viewer),
        422,
        "validation_error",
    )
    assert_error(
        cp_client.get(
            "/api/v1/telemetry", headers=viewer, params={"from": now.isoformat(), "to": start}
        ),
        422,
        "validation_error",
    )
    assert_error(
        cp_client.get("/api/v1/devices/nope/telemetry", headers=viewer), 404, "device_not_found"
    )
    assert cp_client.get("/api/v1/telemetry").status_code == 401


def test_fleet_summary(
    cp_client: TestClient, admin_headers: dict[str, str], device_id: str
) -> None:
    offline = str(enroll(cp_client, admin_headers)["device_id"])
    with Session(engine_of(cp_client)) as session:
        report_model(
            session,
            device_id,
            "tiny:1.0.0",
            device_class="jetson",
            engine="tensorrt",
            variant="trt-fp16",
        )
    summary = cp_client.get("/api/v1/fleet/summary", headers=admin_headers).json()
    assert summary["total"] == 2 and summary["online"] == 1
    assert summary["by_engine"] == {"tensorrt": 1, "none": 1}
    assert summary["by_model"] == {"tiny:1.0.0": 1, "none": 1}
    assert summary["by_class"]["jetson"] == 1
    assert summary["by_health"] == {"ok": 1, "offline": 1}
    assert offline
