"""kill -9 the control plane between taking rollout events in and writing them: after a
restart, every event the broker took from the devices is stored.

The test holds SQLite's write lock while the events arrive, so the control plane has received
them but cannot have written them when it is killed. Written before acknowledged, they are
still the broker's, which delivers them again to the restarted control plane.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from controlplane.core.db import make_engine, migrate
from controlplane.db_models import utcnow
from controlplane.rollouts import driver, service
from controlplane.rollouts.models import RolloutCreate, RolloutDevice
from controlplane.rollouts.strategy import Selector, Strategy, Wave
from models.protocol import RolloutEvent, device_topic
from tests.controlplane.rollouts.conftest import ARTIFACTS, add_device, add_model
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker, free_port
from tests.support.polling import wait_until

DEVICES = 100
STEPS = ("accepted", "downloading", "verifying", "loading", "health_check", "active")
CP_PASSWORD = "cp-kill-test"
INGEST_S = 1.5  # long enough for the control plane to receive every event


class ControlPlaneProcess:
    """`edgefleet-cp serve` in its own process, so that it can be killed with SIGKILL."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._bridge_connected, "the control plane's bridge to connect", 60)

    def _bridge_connected(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            health = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(health.get("ingest", {}).get("mqtt_connected"))

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(tmp_path / "mqtt")
    running.set_users({CONTROL_PLANE_USER: CP_PASSWORD})
    with running:
        yield running


def _dispatched_rollout(engine: Engine) -> list[RolloutDevice]:
    with Session(engine, expire_on_commit=False) as session:
        add_model(session, version="2.0")
        for i in range(DEVICES):
            add_device(session, f"dev-{i:03d}", labels={"site": "a"})
        spec = RolloutCreate(
            model="tiny:2.0",
            selector=Selector(labels={"site": "a"}),
            strategy=Strategy(waves=[Wave.parse("100%")]),
        )
        service.create_rollout(session, spec=spec, artifacts_url=ARTIFACTS, created_by="t")
        driver.tick(session, utcnow())  # start
        driver.tick(session, utcnow())  # dispatch the one wave
        rows = list(session.exec(select(RolloutDevice)))
    assert len(rows) == DEVICES and all(r.desired_version for r in rows)
    return rows


def _publish(client: mqtt.Client, rows: list[RolloutDevice], steps: tuple[str, ...]) -> None:
    infos = []
    for kind in steps:
        for row in rows:
            event = RolloutEvent(
                desired_version=row.desired_version or 0,
                rollout_id=row.rollout_id,
                model="tiny:2.0",
                kind=kind,
                detail=f"{kind} on {row.device_id}",
            )
            infos.append(
                client.publish(
                    device_topic(row.device_id, "events"), event.model_dump_json(), qos=1
                )
            )
    for info in infos:
        info.wait_for_publish(10)  # the broker has it: the device would drop it from its outbox


def _states(engine: Engine) -> dict[str, tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(RolloutDevice).order_by(col(RolloutDevice.device_id)))
        return {r.device_id: (r.state, r.detail) for r in rows}


def test_every_event_is_stored_across_a_kill_9(tmp_path: Path, broker: MosquittoBroker) -> None:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    migrate(url)
    engine = make_engine(url)
    rows = _dispatched_rollout(engine)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(
        {
            "EDGEFLEET_CP_DATA_DIR": str(tmp_path / "cp"),
            "EDGEFLEET_CP_DATABASE_URL": url,
            "EDGEFLEET_CP_MQTT_ENABLED": "1",
            "EDGEFLEET_CP_MQTT_CP_PASSWORD": CP_PASSWORD,
            "EDGEFLEET_CP_MQTT_HOST": broker.host,
            "EDGEFLEET_CP_MQTT_PORT": str(broker.port),
            "EDGEFLEET_CP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
    )
    plane = ControlPlaneProcess(env, port, tmp_path / "cp.log")
    devices = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="test-devices", protocol=MQTTProtocolVersion.MQTTv5
    )
    devices.username_pw_set(CONTROL_PLANE_USER, CP_PASSWORD)
    devices.max_inflight_messages_set(1000)
    devices.connect(broker.host, broker.port)
    devices.loop_start()
    try:
        plane.start()
        _publish(devices, rows, STEPS[:1])
        wait_until(
            lambda: all(d.startswith(STEPS[0]) for _s, d in _states(engine).values()),
            "the first events to be stored",
        )
        lock = sqlite3.connect(tmp_path / "cp.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # no writer gets in until the kill
        try:
            _publish(devices, rows, STEPS[1:])
            time.sleep(INGEST_S)  # the control plane takes them in and waits for the lock
            plane.kill()
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        plane.start()
        expected = {r.device_id: ("succeeded", f"active on {r.device_id}") for r in rows}
        wait_until(lambda: _states(engine) == expected, "every device's last event", 60)
    finally:
        plane.stop()
        devices.loop_stop()
        devices.disconnect()
        engine.dispose()
