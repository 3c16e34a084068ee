"""Ingestion that one device cannot poison: bounds, isolation, counters, health.

The flood tests publish with a device's own credentials through a real Mosquitto to the real
bridge, on SQLite and PostgreSQL; the isolation tests drive the writer on a real database
with messages that slipped past validation.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from controlplane import crud, telemetry_ingest
from controlplane.api.routes import utils as health_route
from controlplane.core.config import Settings
from controlplane.core.db import make_engine, migrate
from controlplane.ingest_counters import BridgeStats
from controlplane.telemetry_ingest import Inbound, IngestWriter
from controlplane.telemetry_models import IngestCounter, TelemetrySample
from models import protocol
from models.budget import DEVICE_BUDGET
from tests.controlplane.helpers import MqttDevice, enroll
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

WAIT_S = 30.0
POISON = b'{"v":1,"seq":%d,"samples":[{"requests":1000000000000000000000000000000}]}'
FLOOD = 2100  # more than the bridge's receive maximum (2000): the broker stops if unacked

pytestmark = pytest.mark.usefixtures("fast_bridge")


@pytest.fixture
def budget_scale() -> float:
    """The device budget: off, so the floods reach what lies past it, unless a test sets it."""
    return 0.0


@pytest.fixture
def broker_settings(broker_settings: Settings, budget_scale: float) -> Settings:
    return broker_settings.model_copy(update={"device_budget_scale": budget_scale})


@pytest.fixture
def publisher(
    fleet_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str]
) -> Iterator[MqttDevice]:
    """A device's own connection, with room for a flood of unacknowledged messages."""
    creds = enroll(fleet_client, admin_headers)
    with closing(MqttDevice(broker, creds, keepalive=10, max_inflight=1000)) as device:
        yield device


def good(seq: int) -> bytes:
    sample = protocol.TelemetrySample(tokens_per_s=10.0, requests=1)
    return protocol.Telemetry(seq=seq, samples=[sample]).model_dump_json().encode()


def stored_samples(client: TestClient, headers: dict[str, str], device_id: str) -> int:
    resp = client.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"metric": "requests", "bucket": 3600},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    return sum(int(p["count"]) for p in resp.json()["points"])


def counters(client: TestClient, headers: dict[str, str]) -> dict[tuple[str, str], int]:
    resp = client.get("/api/v1/ingest/counters", headers=headers)
    assert resp.status_code == 200, resp.text
    return {(r["device_id"], r["counter"]): r["count"] for r in resp.json()}


def test_poison_flood_from_one_device_does_not_stop_ingestion(
    fleet_client: TestClient,
    publisher: MqttDevice,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane.bridge")
    goods = 0
    infos = []
    for i in range(1, FLOOD + 1):
        infos.append(publisher.publish("telemetry", POISON % i))
        if i % 300 == 0:  # good messages among the poison, in the same batches
            goods += 1
            infos.append(publisher.publish("telemetry", good(100_000 + i)))
    for info in infos:
        info.wait_for_publish(WAIT_S)
    wait_until(
        lambda: stored_samples(fleet_client, admin_headers, publisher.id) == goods,
        "good messages among the poison stored",
        WAIT_S,
    )
    publisher.publish("telemetry", good(200_000)).wait_for_publish(WAIT_S)
    wait_until(
        lambda: stored_samples(fleet_client, admin_headers, publisher.id) == goods + 1,
        "a later message still ingested",
        WAIT_S,
    )
    wait_until(
        lambda: counters(fleet_client, admin_headers).get((publisher.id, "invalid")) == FLOOD,
        "drops counted per device and saved",
        WAIT_S,
    )
    health = fleet_client.get("/api/v1/health").json()
    assert health["status"] == "ok", health
    assert health["ingest"]["dropped_total"]["invalid"] == FLOOD
    warned = [r for r in caplog.records if "dropped invalid message" in r.getMessage()]
    assert len(warned) == 1  # counted, not logged 2,100 times


@pytest.mark.parametrize("budget_scale", [0.002])
def test_a_device_past_its_budget_is_throttled_and_the_others_are_not(
    fleet_client: TestClient,
    publisher: MqttDevice,
    broker: MosquittoBroker,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    budget_scale: float,
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane.bridge")
    burst = int(DEVICE_BUDGET.scaled(budget_scale).burst_messages)
    sent = 20 * burst
    for info in [publisher.publish("telemetry", good(i)) for i in range(1, sent + 1)]:
        info.wait_for_publish(WAIT_S)
    with closing(MqttDevice(broker, enroll(fleet_client, admin_headers))) as other:
        other.send("telemetry", good(1))
        wait_until(
            lambda: stored_samples(fleet_client, admin_headers, other.id) == 1,
            "another device's sample stored",
            WAIT_S,
        )

    def accounted() -> tuple[int, int] | None:
        stored = stored_samples(fleet_client, admin_headers, publisher.id)
        throttled = counters(fleet_client, admin_headers).get((publisher.id, "throttled"), 0)
        return (stored, throttled) if stored + throttled == sent else None

    stored, throttled = wait_until(
        accounted, "every message stored or counted against the device", WAIT_S
    )
    assert burst <= stored < sent // 2  # the burst, and what refilled meanwhile
    warned = [r for r in caplog.records if "dropped throttled message" in r.getMessage()]
    assert len(warned) == 1  # counted, not logged for every message
    health = fleet_client.get("/api/v1/health").json()
    assert health["ingest"]["dropped_total"]["throttled"] == throttled


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"online":true,"agent_version":"0.2\\u0000"}',
        b'{"v":1,"online":true,"hardware":{"cpu":{"model":"x\\u0000"}}}',
        b'{"v":1,"online":true,"hardware":{"blob":"' + b"x" * 100_000 + b'"}}',
    ],
    ids=["nul-in-text", "nul-in-hardware", "5mb-style-hardware"],
)
def test_state_with_nul_or_oversized_hardware_is_dropped_and_later_state_lands(
    fleet_client: TestClient,
    publisher: MqttDevice,
    admin_headers: dict[str, str],
    payload: bytes,
) -> None:
    publisher.publish("state", payload).wait_for_publish(WAIT_S)
    state = protocol.DeviceState(online=True, seq=2, agent_version="0.3.0")
    publisher.publish("state", state.model_dump_json().encode()).wait_for_publish(WAIT_S)

    def agent_version() -> str:
        resp = fleet_client.get(f"/api/v1/devices/{publisher.id}", headers=admin_headers)
        return str(resp.json()["agent_version"])

    wait_until(lambda: agent_version() == "0.3.0", "good state after the bad one", WAIT_S)
    wait_until(
        lambda: counters(fleet_client, admin_headers).get((publisher.id, "invalid")) == 1,
        "bad state counted",
        WAIT_S,
    )


# --- the writer on its own: messages that got past validation ------------------------------


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    migrate(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _device(engine: Any, device_id: str) -> None:
    with Session(engine) as session:
        crud.create_device(
            session,
            device_id=device_id,
            name="",
            device_class="cpu-x86",
            agent_version="0",
            hardware={},
            labels={},
            mqtt_password_hash="x",
            artifact_token_hash=device_id,
        )
        session.commit()


def _inbound(
    device_id: str,
    seq: int,
    acked: list[int],
    *,
    requests: int = 1,
    ts: datetime | None = None,
) -> Inbound:
    # model_construct: a value validation would refuse, as if a bound were missing
    sample = protocol.TelemetrySample.model_construct(
        ts=ts or protocol.utcnow(),
        tokens_per_s=1.0,
        ttft_ms=None,
        requests=requests,
        queue_depth=0,
        errors=0,
        cpu_percent=None,
        mem_used_bytes=None,
        temperature_c=None,
        power_w=None,
    )
    message = protocol.Telemetry.model_construct(
        v=1, ts=protocol.utcnow(), seq=seq, samples=[sample]
    )
    return Inbound(
        leaf="telemetry",
        device_id=device_id,
        message=message,
        received_at=protocol.utcnow(),
        ack=lambda: acked.append(seq),
    )


def _writer(engine: Any, stats: BridgeStats) -> IngestWriter:
    return IngestWriter(engine, stats=stats, keep_raw=timedelta(hours=1))


def test_a_message_the_database_refuses_is_isolated_counted_and_acked(engine: Any) -> None:
    _device(engine, "dev-good")
    _device(engine, "dev-bad")
    stats = BridgeStats()
    writer = _writer(engine, stats)
    acked: list[int] = []
    batch = [_inbound("dev-good", seq, acked) for seq in range(1, 8)]
    batch.insert(3, _inbound("dev-bad", 99, acked, requests=10**30))
    writer.start()
    for item in batch:
        writer.submit(item)
    wait_until(lambda: len(acked) == len(batch), "every message acknowledged", WAIT_S)
    writer.stop()
    assert sorted(acked) == [*range(1, 8), 99]
    with Session(engine) as session:
        rows = session.exec(select(TelemetrySample.device_id)).all()  # type: ignore[call-overload]
        saved = {
            (c.device_id, c.counter): c.count for c in session.exec(select(IngestCounter)).scalars()
        }  # type: ignore[call-overload]
    assert sorted(r[0] for r in rows) == ["dev-good"] * 7
    assert stats.snapshot()["quarantined"] == 1
    assert saved[("dev-bad", "quarantined")] == 1


def test_samples_dated_past_the_clock_or_the_retention_are_not_stored(engine: Any) -> None:
    _device(engine, "dev-skewed")
    stats = BridgeStats()
    now, acked = protocol.utcnow(), []
    batch = [
        _inbound("dev-skewed", 1, acked, ts=now + timedelta(minutes=1)),  # a little ahead: kept
        _inbound("dev-skewed", 2, acked, ts=now + timedelta(days=365 * 100)),  # never rolled up
        _inbound("dev-skewed", 3, acked, ts=now - timedelta(hours=2)),  # past keep_raw (1 h)
    ]
    _writer(engine, stats).write(batch)
    with Session(engine) as session:
        stored = session.exec(select(TelemetrySample.seq)).all()  # type: ignore[call-overload]
    assert [row[0] for row in stored] == [1]
    counts = stats.snapshot()
    assert counts["future_samples"] == 1 and counts["stale_samples"] == 1
    assert stats.take_unsaved() == Counter({("dev-skewed", "future_samples"): 1})


def test_a_database_that_does_not_answer_holds_messages_back(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_ingest, "RETRY_MIN_S", 0.01)
    _device(engine, "dev-a")
    writer = _writer(engine, BridgeStats())
    down = threading.Event()
    down.set()
    real_write = writer.write

    def flaky_write(batch: list[Inbound]) -> list[Inbound]:
        if down.is_set():
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        return real_write(batch)

    monkeypatch.setattr(writer, "write", flaky_write)
    monkeypatch.setattr(writer, "_database_answers", lambda: not down.is_set())
    acked: list[int] = []
    writer.start()
    writer.submit(_inbound("dev-a", 1, acked))
    wait_until(lambda: not writer.status().database_ok, "outage noticed", WAIT_S)
    assert acked == [] and writer.status().lag_s > 0
    down.clear()
    wait_until(lambda: acked == [1], "written once the database is back", WAIT_S)
    assert writer.status().database_ok and writer.status().lag_s == 0
    writer.stop()


def test_health_goes_degraded_when_ingestion_stalls(
    fleet_client: TestClient, publisher: MqttDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = fleet_client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["ingest"]["mqtt_connected"] is True
    writer = fleet_client.app.state.bridge._writer  # type: ignore[attr-defined]
    release = threading.Event()
    real_write = writer.write

    def stuck_write(batch: list[Inbound]) -> list[Inbound]:
        release.wait(WAIT_S)
        return real_write(batch)

    monkeypatch.setattr(writer, "write", stuck_write)
    monkeypatch.setattr(health_route, "INGEST_STALL_S", 0.2)
    publisher.publish("telemetry", good(1)).wait_for_publish(WAIT_S)
    resp = wait_until(
        lambda: (r := fleet_client.get("/api/v1/health")).status_code == 503 and r,
        "health degraded",
        WAIT_S,
    )
    body = resp.json()
    assert body["status"] == "degraded" and body["ingest"]["lag_s"] > 0.2
    assert any("behind" in p for p in body["problems"])
    release.set()
    wait_until(lambda: fleet_client.get("/api/v1/health").status_code == 200, "recovered", WAIT_S)
