"""Helpers for control plane tests (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from paho.mqtt.client import MQTTMessageInfo
from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.fleet.enroll import Enrollment
from agent.fleet.mqtt import AgentMqtt, MqttSettings
from agent.fleet.mqtt_identity import client_certificate_files
from agent.fleet.outbox import Outbox
from controlplane import crud
from controlplane.db_models import Device
from models.protocol import ActiveModel, DeviceState, device_topic, utcnow
from models.signing import file_entry, write_signed_manifest
from tests.e2e.fakes import gguf_manifest
from tests.support.mosquitto import MosquittoBroker, device_client
from tests.support.polling import wait_until

HARDWARE = {"device_class": "cpu-x86", "cpu": {"arch": "x86_64", "cores": 2}}


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def get_json(client: TestClient, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """GET an API path that must answer 200; its JSON object."""
    resp = client.get(path, headers=headers)
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()
    return found


def enrollment_token(
    client: TestClient, headers: dict[str, str], labels: dict[str, str] | None = None
) -> str:
    """A fresh one-time enrollment token's secret."""
    resp = client.post("/api/v1/enrollment-tokens", json={"labels": labels or {}}, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def enroll(
    client: TestClient,
    headers: dict[str, str],
    *,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    hardware: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Enroll a device through the API; the enrollment response as JSON."""
    body: dict[str, Any] = {
        "token": enrollment_token(client, headers, labels),
        "hardware": hardware if hardware is not None else HARDWARE,
        "agent_version": "0.1.0",
    }
    if name:
        body["name"] = name
    resp = client.post("/api/v1/enroll", json=body)
    assert resp.status_code == 201, resp.text
    result: dict[str, Any] = resp.json()
    return result


class MqttDevice:
    """An enrolled device's own paho connection, as the agent makes it (MQTT v5, a last will
    that marks it offline), connected and looping until close()."""

    def __init__(
        self,
        broker: MosquittoBroker,
        creds: dict[str, Any],
        *,
        keepalive: int = 5,
        max_inflight: int = 20,  # QoS 1 messages out unacknowledged at once (paho's default)
    ) -> None:
        self.id: str = creds["device_id"]
        self.client = device_client(creds)
        self.client.max_inflight_messages_set(max_inflight)
        will = DeviceState(online=False, agent_version="0.1.0")
        self.client.will_set(self.topic("state"), will.model_dump_json(), qos=1, retain=True)
        connected: list[bool] = []
        self.client.on_connect = lambda *a: connected.append(not a[3].is_failure)
        self.client.connect(broker.host, broker.port, keepalive=keepalive)
        self.client.loop_start()
        wait_until(lambda: connected, "device connect")
        assert connected == [True]

    def topic(self, leaf: str) -> str:
        """The device's own topic `leaf` (state, telemetry, events, cmd, ...)."""
        return device_topic(self.id, leaf)

    def publish(self, leaf: str, payload: bytes, *, retain: bool = False) -> MQTTMessageInfo:
        """Publish at QoS 1 without waiting for the broker's acknowledgement."""
        return self.client.publish(self.topic(leaf), payload, qos=1, retain=retain)

    def send(self, leaf: str, payload: BaseModel | bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker acknowledged it."""
        data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
        self.publish(leaf, data, retain=retain).wait_for_publish(5)

    def cut(self) -> None:
        """Drop the TCP connection without DISCONNECT, like a power cut."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop the network loop."""
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def device_mqtt(
    enrollment: Enrollment,
    address: tuple[str, int, bool],
    outbox_file: Path,
    *,
    cert_dir: Path | None = None,
) -> Iterator[AgentMqtt]:
    """The enrolled agent's own broker connection to (host, port, tls), online and ignoring
    desired states, started and stopped; with the client certificate kept in `cert_dir`."""
    access = enrollment.mqtt
    files = client_certificate_files(cert_dir) if cert_dir else None
    host, port, tls = address
    settings = MqttSettings(
        host,
        port,
        enrollment.device_id,
        access.username,
        access.password,
        tls=tls,
        ca_pem=access.ca_pem,
        client_cert_file=files[0] if files else None,
        client_key_file=files[1] if files else None,
    )
    connection = AgentMqtt(
        settings,
        Outbox(outbox_file),
        state=lambda: DeviceState(online=True),
        on_desired=lambda _d: None,
    )
    connection.start()
    try:
        yield connection
    finally:
        connection.stop()


def make_model_dir(
    root: Path,
    key: Ed25519PrivateKey,
    *,
    name: str = "tiny",
    version: str = "1.0.0",
    payload: bytes = b"",
) -> Path:
    """A small signed model directory (one GGUF-like variant with two files)."""
    model_dir = root / f"{name}-{version}"
    model_dir.mkdir(parents=True)
    weights = payload or bytes(range(256)) * 64  # 16 KiB, every byte value
    (model_dir / "model.gguf").write_bytes(weights)
    (model_dir / "tokenizer.json").write_text('{"model": {"vocab": {}}}')
    files = [file_entry(model_dir, "model.gguf"), file_entry(model_dir, "tokenizer.json")]
    manifest = gguf_manifest(name, version, files)
    write_signed_manifest(model_dir, manifest, key)
    return model_dir


def mark_device_state(
    session: Session, *, device_id: str, online: bool, state: dict[str, Any], seen_at: datetime
) -> Device | None:
    """Record one reported state the way the bridge does, and commit; None for unknown ids."""
    report = crud.StateReport(device_id=device_id, online=online, state=state, seen_at=seen_at)
    if not crud.mark_device_states(session, reports=[report]):
        return None
    session.commit()
    return session.get(Device, device_id, populate_existing=True)


def report_model(
    session: Session,
    device_id: str,
    model: str,
    *,
    device_class: str = "cpu-x86",
    engine: str = "llama_cpp",
    variant: str = "q4",
    agent_version: str = "0.2.0",
    hardware: dict[str, Any] | None = None,
    seen_at: datetime | None = None,
) -> Device | None:
    """Record that the device reported itself online, running `model` ("name:version") on
    `engine`, as the bridge records a state report (committed); None for unknown ids."""
    name, version = model.split(":")
    state = DeviceState(
        online=True,
        device_class=device_class,
        agent_version=agent_version,
        hardware=hardware,
        active=ActiveModel(name=name, version=version, variant=variant, engine=engine),
    )
    return mark_device_state(
        session,
        device_id=device_id,
        online=True,
        state=state.model_dump(mode="json"),
        seen_at=seen_at or utcnow(),
    )


@contextmanager
def sql_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the engine runs meanwhile, in order."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
