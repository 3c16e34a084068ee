"""One enrolled device attacking the fleet through the real broker with the shipped config.

Each attack here worked before the identity rules (issue 14): taking over another device's or
the control plane's client id, swallowing the control plane's messages through its shared
subscription group, and a 50 MB publish forwarded to the control plane.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controlplane.bridge import MqttBridge
from models import protocol
from tests.controlplane.conftest import CP_MQTT_PASSWORD
from tests.controlplane.helpers import enroll
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker
from tests.support.polling import wait_until

WAIT_S = 10.0
MIB = 1024 * 1024


class Client:
    """A paho client that records its CONNACK, disconnects and messages, and never retries."""

    def __init__(
        self,
        broker: MosquittoBroker,
        *,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str,
        version: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        persistent: bool = False,
    ) -> None:
        self.answered = threading.Event()
        self.accepted = False
        self.disconnected = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.put(list(rcs))
        self.client.reconnect_delay_set(60, 60)  # one connection per Client, no retry
        session: dict[str, Any] = {}
        if persistent:  # MQTT v5 only
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            session = {"clean_start": False, "properties": props}
        self.client.connect(broker.host, port, keepalive=30, **session)
        self.client.loop_start()
        assert self.answered.wait(WAIT_S), "no CONNACK and no disconnect"

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.accepted = not reason.is_failure
        self.answered.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.disconnected.set()
        self.answered.set()  # refused before any CONNACK

    def subscribe(self, topic: str) -> list[Any]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=WAIT_S)
        except (RuntimeError, ValueError):
            pass  # the broker dropped the connection: what the caller checks

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=WAIT_S)

    def received(self) -> list[tuple[str, bytes]]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker: MosquittoBroker) -> Iterator[Any]:
    made: list[Client] = []

    def _make(port: int, creds: dict[str, Any] | None, **kwargs: Any) -> Client:
        username = creds["mqtt"]["username"] if creds else kwargs.pop("username", None)
        password = creds["mqtt"]["password"] if creds else kwargs.pop("password", None)
        kwargs.setdefault("client_id", username or "anonymous")
        client = Client(broker, port=port, username=username, password=password, **kwargs)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


def sizes_before_marker(cp: Client, via: Client, topic: str) -> list[int]:
    """Publish a marker on `topic` through `via`; the payload sizes `cp` got before it."""
    via.publish(topic, b"marker")
    sizes = []
    while (got := cp.next_message()) != (topic, b"marker"):
        sizes.append(len(got[1]))
    return sizes


def test_device_cannot_take_over_another_devices_client_id(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    thief, victim = enroll(broker_client, admin_headers), enroll(broker_client, admin_headers)
    victim_conn = clients(broker.device_port, victim)
    assert victim_conn.accepted, broker.log()
    victim_topic = f"{victim['mqtt']['topic_prefix']}/desired"
    assert not any(rc.is_failure for rc in victim_conn.subscribe(victim_topic))

    attacker = clients(broker.device_port, thief, client_id=victim["device_id"])
    assert attacker.accepted  # it gets in, but as itself (client id = its username)
    cp = clients(broker.port, None, username=CONTROL_PLANE_USER, password=CP_MQTT_PASSWORD)
    cp.publish(victim_topic, b"still-here")
    assert victim_conn.next_message() == (victim_topic, b"still-here")
    assert not victim_conn.disconnected.is_set()


def test_device_cannot_take_over_the_control_planes_client_id(
    fleet_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    bridge: MqttBridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    guessable = f"edgefleet-cp-{socket.gethostname()}"
    thief, other = enroll(fleet_client, admin_headers), enroll(fleet_client, admin_headers)

    # Knowing the real id does not help on the device listener; guessing fails on any.
    assert clients(broker.device_port, thief, client_id=bridge.client_id).accepted
    assert clients(broker.port, thief, client_id=guessable).accepted
    assert clients(broker.device_port, thief, client_id=guessable).accepted

    device = clients(broker.device_port, other)
    before = bridge.stats.get("received", 0)
    telemetry = protocol.Telemetry(seq=1, samples=[protocol.TelemetrySample()])
    topic = f"{other['mqtt']['topic_prefix']}/telemetry"
    device.publish(topic, telemetry.model_dump_json().encode())
    wait_until(lambda: bridge.stats.get("received", 0) > before, timeout=WAIT_S)
    assert bridge.stats.get("reconnects", 0) == 0 and bridge.connected.is_set()
    assert bridge.client_id.startswith(guessable + "-") and len(bridge.client_id) > len(guessable)


def test_device_in_the_control_planes_share_group_swallows_nothing(
    fleet_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    bridge: MqttBridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    thief, victim = enroll(fleet_client, admin_headers), enroll(fleet_client, admin_headers)
    thief_conn = clients(broker.device_port, thief)
    # Measured on Mosquitto 2.0.11: the ACL file never checks SUBSCRIBE, so all are granted.
    for leaf in ("telemetry", "state", "events"):
        thief_conn.subscribe(protocol.shared_subscription(leaf, "cp"))
        thief_conn.subscribe(protocol.shared_subscription(leaf, "edgefleet"))
    thief_conn.subscribe("ef/v1/devices/+/telemetry")

    device = clients(broker.device_port, victim)
    before = bridge.stats.get("received", 0)
    sent = 20
    for seq in range(1, sent + 1):
        batch = protocol.Telemetry(seq=seq, samples=[protocol.TelemetrySample(requests=seq)])
        device.publish(
            f"{victim['mqtt']['topic_prefix']}/telemetry", batch.model_dump_json().encode()
        )
    try:
        wait_until(lambda: bridge.stats.get("received", 0) - before >= sent, timeout=WAIT_S)
    except AssertionError:
        got = bridge.stats.get("received", 0) - before
        raise AssertionError(f"the control plane received {got} of {sent}") from None
    assert thief_conn.received() == []


def test_oversized_publishes_are_refused(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    dev = enroll(broker_client, admin_headers)
    topic = f"{dev['mqtt']['topic_prefix']}/telemetry"
    cp = clients(broker.port, None, username=CONTROL_PLANE_USER, password=CP_MQTT_PASSWORD)
    cp.subscribe(topic)
    # Over max_packet_size the broker hangs up instead of reading the packet; MQTT 3.1.1
    # clients are not even told the limit, and paho does not enforce it for v5 either.
    for version, size in (
        (MQTTProtocolVersion.MQTTv311, 50 * MIB),
        (MQTTProtocolVersion.MQTTv5, MIB + 1),
    ):
        conn = clients(broker.device_port, dev, version=version)
        conn.client.publish(topic, b"x" * size, qos=1)  # no PUBACK will come: don't wait for it
        assert conn.disconnected.wait(WAIT_S), f"{size} bytes were taken"
        conn.close()
    assert sizes_before_marker(cp, clients(broker.device_port, dev), topic) == []


def test_a_devices_persistent_session_survives_on_the_device_listener(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    """use_username_as_clientid keeps an agent's session: its client id is its username."""
    dev = enroll(broker_client, admin_headers)
    topic = f"{dev['mqtt']['topic_prefix']}/cmd"
    first = clients(broker.device_port, dev, persistent=True)
    first.subscribe(topic)
    first.close()
    cp = clients(broker.port, None, username=CONTROL_PLANE_USER, password=CP_MQTT_PASSWORD)
    cp.publish(topic, b"while-offline")
    again = clients(broker.device_port, dev, persistent=True)  # no new SUBSCRIBE
    assert again.next_message() == (topic, b"while-offline")


def test_anonymous_and_revoked_devices_are_refused_on_the_device_listener(
    broker_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str], clients: Any
) -> None:
    assert not clients(broker.device_port, None, client_id="anon").accepted
    dev = enroll(broker_client, admin_headers)
    assert not clients(broker.device_port, None, username=dev["device_id"], password="x").accepted
    connected = clients(broker.device_port, dev)
    assert connected.accepted
    resp = broker_client.post(f"/api/v1/devices/{dev['device_id']}/revoke", headers=admin_headers)
    assert resp.status_code == 200
    assert connected.disconnected.wait(WAIT_S)
    assert not clients(broker.device_port, dev).accepted
