"""The ingest in its own process, against a real Mosquitto and a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psutil
import pytest
from fastapi.testclient import TestClient

from controlplane.broker_sync import control_plane_mqtt_password
from controlplane.core.config import Settings
from controlplane.ingest_process import IngestProcess
from controlplane.main import create_app
from models import protocol
from tests.controlplane.helpers import enroll
from tests.support.mosquitto import MosquittoBroker, device_client, free_port
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("fast_bridge")


@pytest.fixture
def split_client(broker_settings: Settings) -> Iterator[TestClient]:
    """A started app whose bridge, writer and rollout controller run in a child process."""
    settings = broker_settings.model_copy(update={"mqtt_enabled": True, "ingest_process": True})
    with TestClient(create_app(settings)) as client:
        yield client


def connect_device(broker: MosquittoBroker, creds: dict[str, Any]) -> tuple[mqtt.Client, list[str]]:
    """A real paho client with the device's credentials; collects the commands it gets."""
    commands: list[str] = []
    client = device_client(creds)
    client.on_message = lambda _c, _u, msg: commands.append(msg.payload.decode())
    client.connect(broker.host, broker.port, keepalive=5)
    client.loop_start()
    client.subscribe(protocol.device_topic(creds["device_id"], "cmd"), qos=1)
    return client, commands


def test_reports_are_stored_health_comes_from_the_child_and_commands_go_out(
    split_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str]
) -> None:
    ingest = split_client.app.state.bridge  # type: ignore[attr-defined]
    assert isinstance(ingest, IngestProcess) and ingest.pid != os.getpid()
    wait_until(ingest.connected.is_set, "the child's bridge connected")
    creds = enroll(split_client, admin_headers)
    device, commands = connect_device(broker, creds)
    try:
        batch = protocol.Telemetry(seq=1, samples=[protocol.TelemetrySample(tokens_per_s=42.0)])
        topic = protocol.device_topic(creds["device_id"], "telemetry")
        device.publish(topic, batch.model_dump_json(), qos=1).wait_for_publish(5)
        wait_until(lambda: ingest.stats.get("persisted", 0) >= 1, "persisted, as the child says")
        health = split_client.get("/api/v1/health").json()
        assert health["ingest"]["mqtt_connected"] is True
        assert health["ingest"]["since_start"]["persisted"] >= 1
        metrics = split_client.get("/metrics").text
        assert "edgefleet_cp_mqtt_connected 1.0" in metrics

        sent = split_client.post(
            f"/api/v1/devices/{creds['device_id']}/commands",
            json={"command": "reprobe"},
            headers=admin_headers,
        )
        assert sent.status_code == 201, sent.text
        wait_until(lambda: commands, "the command reached the device")
        assert protocol.Command.model_validate_json(commands[0]).command == "reprobe"
    finally:
        device.disconnect()
        device.loop_stop()


def test_the_child_stops_with_the_app_and_comes_back_if_it_dies(broker_settings: Settings) -> None:
    settings = broker_settings.model_copy(update={"mqtt_enabled": True, "ingest_process": True})
    with TestClient(create_app(settings)) as client:
        ingest = client.app.state.bridge  # type: ignore[attr-defined]
        first = ingest.pid
        wait_until(ingest.connected.is_set, "connected")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: ingest.pid not in (None, first), "a new child", timeout=30)
        wait_until(ingest.connected.is_set, "the new child connected", timeout=30)
        second = ingest.pid
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie"


def test_serve_runs_the_ingest_in_a_child_and_stops_it_on_sigterm(
    broker_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EDGEFLEET_CP_DATA_DIR": str(broker_settings.data_dir),
        "EDGEFLEET_CP_DATABASE_URL": broker_settings.database_url,
        "EDGEFLEET_CP_MQTT_ENABLED": "true",
        "EDGEFLEET_CP_MQTT_HOST": broker_settings.mqtt_host,
        "EDGEFLEET_CP_MQTT_PORT": str(broker_settings.mqtt_port),
        "EDGEFLEET_CP_MQTT_CP_PASSWORD": control_plane_mqtt_password(broker_settings),
        "EDGEFLEET_CP_BROKER_PASSWORD_FILE": str(broker_settings.broker_password_file),
        "EDGEFLEET_CP_BROKER_ACL_FILE": str(broker_settings.broker_acl_file),
        "EDGEFLEET_CP_BROKER_PID": str(broker_settings.broker_pid),
    }
    env.pop("EDGEFLEET_CP_INGEST_PROCESS", None)
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
            except httpx.HTTPError:
                return False
            return got.status_code == 200 and got.json()["ingest"]["mqtt_connected"]

        wait_until(healthy, "serve healthy with its ingest connected", timeout=60)
        children = psutil.Process(serve.pid).children(recursive=True)
        ingest = [c for c in children if "multiprocessing" in " ".join(c.cmdline())]
        assert ingest, "no ingest child"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=40) in (0, -signal.SIGTERM)  # uvicorn re-raises it when done
        # The ingest child and multiprocessing's resource tracker end on their own once serve
        # is gone (the tracker when its pipe closes): give them a moment, never kill them here.
        _gone, alive = psutil.wait_procs(ingest, timeout=15)
        for child in alive:
            assert child.status() == psutil.STATUS_ZOMBIE, child.cmdline()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        log.close()
    logged = (tmp_path / "serve.log").read_text()
    assert "[ingest] MQTT bridge connected" in logged
    assert "Application shutdown complete" in logged and "Traceback" not in logged
