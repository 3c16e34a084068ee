"""Commands (`cmd` -> `cmd/result`) on a real AgentNode against a real Mosquitto."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.fleet.commands import CommandRunner
from agent.fleet.daemon import AgentNode
from agent.model_loading import probe_profile
from agent.runtime import ModelRuntime
from models.protocol import Command, CommandResult, device_topic
from tests.agent.fleet.nodes import (
    CONTROL_PLANE_PASSWORD,
    DEVICE,
    desired_fake_model,
    enrollment,
    node_options,
)
from tests.e2e.fakes import FakeEngineFactory, fake_engines
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker

WAIT_S = 10.0


class ControlPlane:
    """The control plane's side of one device: publishes `cmd`, collects `cmd/result`/`state`."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.results: queue.Queue[CommandResult] = queue.Queue()
        self.states: queue.Queue[bytes] = queue.Queue()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="cp-test",
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(CONTROL_PLANE_USER, CONTROL_PLANE_PASSWORD)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(
            [(device_topic(DEVICE, "cmd/result"), 1), (device_topic(DEVICE, "state"), 1)]
        )
        self.client.loop_start()
        assert subscribed.wait(WAIT_S)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/cmd/result"):
            self.results.put(CommandResult.model_validate_json(msg.payload))
        else:
            self.states.put(bytes(msg.payload))

    def send(self, payload: str) -> None:
        self.client.publish(device_topic(DEVICE, "cmd"), payload, qos=1).wait_for_publish(WAIT_S)

    def result(self) -> CommandResult:
        return self.results.get(timeout=WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CountingProbe:
    """The real hardware probe, counted."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return probe_profile().model_dump(mode="json")


@pytest.fixture
def probe() -> CountingProbe:
    return CountingProbe()


@pytest.fixture
def engines() -> FakeEngineFactory:
    return fake_engines()


@pytest.fixture
def node(
    broker: MosquittoBroker,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    probe: CountingProbe,
    engines: FakeEngineFactory,
) -> Iterator[AgentNode]:
    options = node_options(
        tmp_path / "agent",
        engine_factory=engines,
        hardware={"device_class": "before"},
        device_class="before",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        probe=probe,
    )
    agent = AgentNode(enrollment(key), ModelRuntime(), options)
    agent.start()
    assert agent.mqtt.wait_connected(WAIT_S)
    yield agent
    agent.stop()


@pytest.fixture
def cp(broker: MosquittoBroker) -> Iterator[ControlPlane]:
    plane = ControlPlane(broker)
    yield plane
    plane.close()


def serve_fake_model(node: AgentNode, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    assert node.executor.apply(desired_fake_model(tmp_path, key, 1))


def test_reprobe_updates_hardware_and_state(
    node: AgentNode, cp: ControlPlane, probe: CountingProbe
) -> None:
    cp.send(Command(request_id="r1", command="reprobe").model_dump_json())
    result = cp.result()
    assert result.request_id == "r1" and result.ok, result.error
    assert result.result["device_class"] == probe_profile().device_class != "before"
    assert result.result["hardware_digest"] == node.state().hardware_digest
    assert probe.calls == 1
    assert node.state().device_class == result.result["device_class"]


def test_repeated_request_id_runs_once(
    node: AgentNode, cp: ControlPlane, probe: CountingProbe
) -> None:
    payload = Command(request_id="dup", command="reprobe").model_dump_json()
    cp.send(payload)
    first = cp.result()
    cp.send(payload)  # what a QoS 1 redelivery looks like to the agent
    again = cp.result()
    assert first.ok and again.model_dump() == first.model_dump()
    assert probe.calls == 1


def test_restart_engine_reloads_the_active_model(
    node: AgentNode,
    cp: ControlPlane,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    engines: FakeEngineFactory,
) -> None:
    serve_fake_model(node, tmp_path, key)
    before = node.runtime.active
    cp.send(Command(request_id="re", command="restart-engine").model_dump_json())
    result = cp.result()
    assert result.ok, result.error
    assert result.result["model"] == "tiny:1.0" and float(str(result.result["load_seconds"])) >= 0
    after = node.runtime.active
    assert after is not None and after is not before and after.engine is engines.created[-1]


def test_benchmark_times_the_active_model(
    node: AgentNode, cp: ControlPlane, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    serve_fake_model(node, tmp_path, key)
    cp.send(Command(request_id="b1", command="benchmark", args={"tokens": 8}).model_dump_json())
    result = cp.result()
    assert result.ok, result.error
    assert float(str(result.result["tokens_per_s"])) > 0 and result.result["tokens"] == 8
    assert node.runtime.active is not None  # the serving model was left alone


def test_commands_without_a_model_or_with_bad_args_fail_clearly(
    node: AgentNode, cp: ControlPlane
) -> None:
    cp.send(Command(request_id="n1", command="restart-engine").model_dump_json())
    assert cp.result().error == "no fleet model is active on this device; roll one out first"
    cp.send(Command(request_id="n2", command="benchmark", args={"tokens": "x"}).model_dump_json())
    failed = cp.result()
    assert not failed.ok and "args.tokens" in failed.error


def test_unknown_command_is_answered_not_run() -> None:
    replies: list[CommandResult] = []
    runner = CommandRunner({"reprobe": lambda args: {}}, replies.append)
    # A newer control plane's command: the protocol schema of this agent does not list it.
    newer = Command.model_construct(request_id="u1", command="selftest", args={})  # type: ignore[arg-type]
    result = runner.execute(newer)
    assert not result.ok
    assert result.error == "unknown command 'selftest'; this agent runs: reprobe"


def test_a_crashing_command_is_answered_with_its_error() -> None:
    def crash(_args: object) -> dict[str, object]:
        raise RuntimeError("boom")

    runner = CommandRunner({"reprobe": crash}, lambda result: None)
    result = runner.execute(Command(request_id="c1", command="reprobe"))
    assert not result.ok and result.error == "reprobe failed: RuntimeError: boom"


def test_a_command_this_agent_cannot_read_is_refused_over_mqtt(
    node: AgentNode, cp: ControlPlane
) -> None:
    """A newer control plane's command fails the schema here: answered ok=False, not dropped."""
    cp.send('{"v": 1, "request_id": "new1", "command": "selftest", "args": {}}')
    result = cp.result()
    assert result.request_id == "new1" and not result.ok
    assert "command" in result.error
