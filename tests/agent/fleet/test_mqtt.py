"""The agent's MQTT connection against a real Mosquitto with the shipped config."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import agent.fleet.mqtt as agent_mqtt
from agent.fleet.mqtt import AgentMqtt, MqttError, MqttSettings, parse_broker_url
from agent.fleet.outbox import MAX_PAYLOAD_BYTES, Outbox
from models.budget import Budget
from models.protocol import CommandResult, DesiredState, DeviceState, RolloutEvent, device_topic
from tests.agent.fleet.nodes import CONTROL_PLANE_PASSWORD, DEVICE, DEVICE_PASSWORD
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker
from tests.support.polling import wait_until


class Observer:
    """A control-plane-side client with a persistent session, collecting one device's topics."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "observer") -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(CONTROL_PLANE_USER, CONTROL_PLANE_PASSWORD)
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()

        def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe(f"ef/v1/devices/{DEVICE}/#", qos=1)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), m.retain)
        )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(5)

    def next(self, leaf: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, payload, _ = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if topic.endswith("/" + leaf):
                return payload
        raise AssertionError(f"no {leaf} message within {timeout}s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(autouse=True)
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mqtt, "RECONNECT_MAX_S", 1)


def make_agent(
    broker: MosquittoBroker, tmp_path: Path, desired: list[DesiredState] | None = None
) -> AgentMqtt:
    settings = MqttSettings(broker.host, broker.port, DEVICE, DEVICE, DEVICE_PASSWORD)
    sink = desired if desired is not None else []
    return AgentMqtt(
        settings,
        Outbox(tmp_path / "outbox.db"),
        state=lambda: DeviceState(online=True, device_class="cpu"),
        on_desired=sink.append,
    )


@pytest.fixture
def observer(broker: MosquittoBroker) -> Iterator[Observer]:
    watching = Observer(broker)
    yield watching
    watching.close()


@pytest.fixture
def start_agent(broker: MosquittoBroker, tmp_path: Path) -> Iterator[Callable[..., AgentMqtt]]:
    """Start an agent client (`desired` collects its desired states); stopped at teardown."""
    started: list[AgentMqtt] = []

    def start(desired: list[DesiredState] | None = None) -> AgentMqtt:
        agent = make_agent(broker, tmp_path, desired)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def event(i: int) -> RolloutEvent:
    return RolloutEvent(desired_version=i, model="tiny", kind="downloading")


def test_state_is_retained_and_last_will_marks_offline(
    observer: Observer, start_agent: Callable[..., AgentMqtt]
) -> None:
    agent = start_agent()
    assert DeviceState.model_validate_json(observer.next("state")).online
    sock = agent._client.socket()
    assert sock is not None
    sock.close()  # the connection dies without DISCONNECT: the broker sends the will
    assert not DeviceState.model_validate_json(observer.next("state")).online
    assert DeviceState.model_validate_json(observer.next("state")).online  # reconnected


def test_desired_is_delivered_and_malformed_is_ignored(
    observer: Observer, start_agent: Callable[..., AgentMqtt]
) -> None:
    received: list[DesiredState] = []
    observer.client.publish(device_topic(DEVICE, "desired"), b"{not json", qos=1, retain=True)
    agent = start_agent(received)
    assert agent.wait_connected(5)
    desired = DesiredState(version=3)
    observer.client.publish(
        device_topic(DEVICE, "desired"), desired.model_dump_json(), qos=1, retain=True
    )
    wait_until(lambda: bool(received), timeout=5)
    assert [d.version for d in received] == [3]


def test_outbox_filled_while_broker_away_replays_in_order(
    broker: MosquittoBroker, observer: Observer, start_agent: Callable[..., AgentMqtt]
) -> None:
    agent = start_agent()
    assert agent.wait_connected(5)
    agent.send("events", event(0))
    assert RolloutEvent.model_validate_json(observer.next("events")).desired_version == 0
    wait_until(lambda: len(agent.outbox) == 0, timeout=5)  # its PUBACK is in: not sent again
    broker.stop()
    wait_until(lambda: not agent.connected, timeout=5)
    for i in range(1, 51):
        agent.send("events", event(i))
    assert len(agent.outbox) == 50
    broker.start()  # the observer's persistent session was saved with the broker's state
    got = [
        RolloutEvent.model_validate_json(observer.next("events", 15)).desired_version
        for _ in range(50)
    ]
    assert got == list(range(1, 51))
    wait_until(lambda: len(agent.outbox) == 0, timeout=5)
    assert len(agent.outbox) == 0


def test_the_outbox_goes_out_at_the_agents_pace_and_waits_for_the_rest(
    monkeypatch: pytest.MonkeyPatch, observer: Observer, start_agent: Callable[..., AgentMqtt]
) -> None:
    # A burst of 5 messages, then one every 100 s: the sixth waits in the outbox, nothing lost.
    pace = Budget(burst_messages=5, messages_per_s=0.01, burst_bytes=10**6, bytes_per_s=10**4)
    monkeypatch.setattr(agent_mqtt, "AGENT_PACE", pace)
    agent = start_agent()
    assert agent.wait_connected(5)
    for i in range(8):
        agent.send("events", event(i))
    got = [
        RolloutEvent.model_validate_json(observer.next("events")).desired_version for _ in range(5)
    ]
    assert got == list(range(5))
    wait_until(lambda: len(agent.outbox) == 3, "the burst acknowledged and gone", timeout=5)
    with pytest.raises(AssertionError):
        observer.next("events", timeout=1.0)
    assert [e.topic.rsplit("/", 1)[1] for e in agent.outbox.peek()] == ["events"] * 3


def test_graceful_stop_publishes_offline(
    observer: Observer, start_agent: Callable[..., AgentMqtt]
) -> None:
    agent = start_agent()
    assert json.loads(observer.next("state"))["online"] is True
    agent.stop()
    assert json.loads(observer.next("state"))["online"] is False


class CountingEvent(threading.Event):
    """An Event that counts its waits: each drain-loop iteration waits on one of two events."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_drainer_sleeps_while_the_broker_is_down(broker: MosquittoBroker, tmp_path: Path) -> None:
    agent = make_agent(broker, tmp_path)
    wake, online = CountingEvent(), CountingEvent()
    agent._wake, agent._online = wake, online  # before start(): the drainer uses these
    agent.start()
    try:
        assert agent.wait_connected(5)
        broker.stop()
        wait_until(lambda: not agent.connected, timeout=5)
        before = wake.waits + online.waits
        for i in range(20):
            agent.send("events", event(i))  # each send sets _wake: it must not start a spin
        time.sleep(0.5)  # a window to count in; a spinning loop makes ~10^4 iterations here
        assert wake.waits + online.waits - before <= 2
        broker.start()
        wait_until(
            lambda: len(agent.outbox) == 0, timeout=15
        )  # connect wakes it, the outbox drains
    finally:
        agent.stop()


def test_broker_urls() -> None:
    assert parse_broker_url("mqtts://broker.lan") == ("broker.lan", 8883, True)
    assert parse_broker_url("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884, False)
    for bad in ("http://broker.lan", "mqtt://", "mqtts://broker.lan:99999"):
        with pytest.raises(MqttError):
            parse_broker_url(bad)


def test_a_message_the_broker_would_refuse_is_not_queued(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    agent = make_agent(broker, tmp_path)
    # Built without validation: the point is what the agent does with any oversized message.
    huge = CommandResult.model_construct(
        request_id="r1", ok=True, result={"blob": "x" * MAX_PAYLOAD_BYTES}
    )
    agent.send("cmd/result", huge)  # would make the broker hang up on every reconnect
    agent.send("events", event(1))
    assert [e.topic.rsplit("/", 1)[-1] for e in agent.outbox.peek(10)] == ["events"]
    agent.outbox.close()


def test_reconnect_backoff_doubles_to_its_cap_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    monkeypatch.setattr(agent_mqtt, "RECONNECT_MIN_S", 1.0)
    monkeypatch.setattr(agent_mqtt, "RECONNECT_MAX_S", 30.0)
    rng = random.Random(7)
    for attempt, cap in [(0, 1.0), (1, 2.0), (3, 8.0), (5, 30.0), (60, 30.0)]:
        delays = {agent_mqtt.backoff_s(attempt, rng) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(delays) > 1  # jittered: a fleet does not come back in lockstep


def test_reconnect_attempts_back_off_while_the_broker_is_down(
    broker: MosquittoBroker,
    start_agent: Callable[..., AgentMqtt],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_mqtt, "RECONNECT_MIN_S", 0.2)
    monkeypatch.setattr(agent_mqtt, "RECONNECT_MAX_S", 5.0)
    agent = start_agent()
    assert agent.wait_connected(5)
    broker.stop()
    wait_until(lambda: not agent.connected, timeout=5)
    time.sleep(1.0)  # a window to count in: a spinning reconnect makes thousands here
    assert agent.reconnects <= 6  # 0.2 doubling: about three attempts fit in the window
    broker.start()
    assert agent.wait_connected(15)
