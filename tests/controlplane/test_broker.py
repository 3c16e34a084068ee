"""Against a real Mosquitto: enrolled devices connect, stay in their subtree, get revoked."""

from __future__ import annotations

import queue
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.controlplane.conftest import CP_MQTT_PASSWORD
from tests.controlplane.helpers import enroll
from tests.support.mosquitto import MosquittoBroker

WAIT_S = 5.0


class Probe:
    """A paho client on its own loop thread that records what it connects and receives."""

    def __init__(self, broker: MosquittoBroker, username: str, password: str) -> None:
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.disconnected: queue.Queue[ReasonCode] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{username}-probe",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc)
        self.history: list[tuple[str, bytes]] = []
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self.subacks.put(list(rcs))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnected.put(rc)
        self.client.reconnect_delay_set(60, 60)  # a refused client must not retry in the test
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.rc = self.connack.get(timeout=WAIT_S)

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.history.append((msg.topic, bytes(msg.payload)))
        self.messages.put((msg.topic, bytes(msg.payload)))

    def subscribe(self, topic: str) -> list[ReasonCode]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=WAIT_S)

    def received(self) -> list[tuple[str, bytes]]:
        return list(self.history)

    def wait_for(self, topic: str) -> bytes:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                got_topic, payload = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if got_topic == topic:
                return payload
        raise AssertionError(f"nothing on {topic}; got {self.received()}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def probes() -> Any:
    made: list[Probe] = []

    def _make(broker: MosquittoBroker, username: str, password: str) -> Probe:
        probe = Probe(broker, username, password)
        made.append(probe)
        return probe

    yield _make
    for probe in made:
        probe.close()


def test_enrolled_device_is_confined_to_its_subtree(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], probes: Any
) -> None:
    a = enroll(broker_client, admin_headers)
    b = enroll(broker_client, admin_headers)
    cp = probes(broker, "edgefleet-cp", CP_MQTT_PASSWORD)
    assert not cp.rc.is_failure
    assert not any(rc.is_failure for rc in cp.subscribe("ef/v1/devices/+/#"))
    dev = probes(broker, a["mqtt"]["username"], a["mqtt"]["password"])
    assert not dev.rc.is_failure, broker.log()
    own = a["mqtt"]["topic_prefix"]

    assert not any(rc.is_failure for rc in dev.subscribe(f"{own}/desired"))
    cp.publish(f"{own}/desired", b"desired-1")
    assert dev.wait_for(f"{own}/desired") == b"desired-1"

    other = b["mqtt"]["topic_prefix"]
    dev.publish(f"{other}/state", b"forged")
    dev.publish(f"{own}/state", b"mine")  # same connection: arrives after the forged one would
    assert cp.wait_for(f"{own}/state") == b"mine"
    assert (f"{other}/state", b"forged") not in cp.received()

    # Mosquitto 2.0 may grant the SUBACK; what counts is that nothing foreign is delivered.
    dev.subscribe(f"{other}/desired")
    dev.subscribe("ef/v1/devices/+/state")
    cp.publish(f"{other}/desired", b"not-for-a")
    cp.publish(f"{other}/state", b"not-for-a-either")
    cp.publish(f"{own}/desired", b"desired-2")
    assert dev.wait_for(f"{own}/desired") == b"desired-2"
    assert [t for t, _ in dev.received() if not t.startswith(own)] == []


def test_wrong_password_and_revoked_device_are_refused(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], probes: Any
) -> None:
    a = enroll(broker_client, admin_headers)
    username, password = a["mqtt"]["username"], a["mqtt"]["password"]
    assert probes(broker, username, password + "x").rc.is_failure
    assert probes(broker, "dev-unknown", password).rc.is_failure

    connected = probes(broker, username, password)
    assert not connected.rc.is_failure
    resp = broker_client.post(f"/api/v1/devices/{username}/revoke", headers=admin_headers)
    assert resp.status_code == 200
    # Mosquitto 2 re-checks connected clients on reload and drops the revoked one.
    connected.disconnected.get(timeout=WAIT_S)
    assert probes(broker, username, password).rc.is_failure


def test_broker_keeps_credentials_across_restart(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], probes: Any
) -> None:
    a = enroll(broker_client, admin_headers)
    broker.restart()
    assert not probes(broker, a["mqtt"]["username"], a["mqtt"]["password"]).rc.is_failure
