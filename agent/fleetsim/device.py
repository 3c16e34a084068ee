"""One simulated agent: its MQTT connection (driven by the fleet's loop) and what it reports."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from pydantic import BaseModel, ValidationError

from models.protocol import (
    ActiveModel,
    Command,
    CommandResult,
    DesiredState,
    DeviceState,
    RolloutEvent,
    Telemetry,
    TelemetrySample,
    device_topic,
)

if TYPE_CHECKING:
    from agent.fleetsim.fleet import FleetSimulator

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
KEEPALIVE_S = 60

DesiredHook = Callable[["SimulatedDevice", DesiredState], "Awaitable[None] | None"]
CommandHook = Callable[
    ["SimulatedDevice", Command], "Awaitable[CommandResult | None] | CommandResult | None"
]
SampleFactory = Callable[["SimulatedDevice"], TelemetrySample]


@dataclass
class DeviceSpec:
    """Who a simulated device is and what it reports."""

    device_id: str
    password: str
    device_class: str = "cpu-x86"
    agent_version: str = "fleetsim-1"
    active: ActiveModel | None = None
    hardware: dict[str, object] | None = None


@dataclass
class FleetStats:
    """Counters over the whole fleet."""

    connected: int = 0
    connect_failures: int = 0
    telemetry_sent: int = 0
    acked: int = 0
    publish_failures: int = 0
    desired_received: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Degradation:
    """How a model serves worse than the device's baseline (injected by rollout tests)."""

    speed: float = 1.0  # decode tok/s and 1/TTFT are multiplied by this
    error_rate: float = 0.0  # share of requests that fail


def synthetic_sample(device: SimulatedDevice) -> TelemetrySample:
    """Plausible numbers around a per-device baseline, worse while a degradation is active."""
    base = device.baseline_tps * device.degradation.speed
    requests = random.randint(1, 5)
    failed = sum(random.random() < device.degradation.error_rate for _ in range(requests))
    return TelemetrySample(
        tokens_per_s=round(random.gauss(base, base * 0.05), 2),
        ttft_ms=round(random.gauss(80.0, 8.0) / device.degradation.speed, 2),
        requests=requests,
        queue_depth=random.randint(0, 2),
        errors=failed,
        cpu_percent=round(random.uniform(20.0, 80.0), 1),
        mem_used_bytes=random.randint(800, 1200) * 1024 * 1024,
        temperature_c=round(random.uniform(40.0, 70.0), 1),
        power_w=round(random.uniform(5.0, 15.0), 1),
    )


class SimulatedDevice:
    """One simulated agent: an MQTT connection plus the state it reports."""

    def __init__(self, spec: DeviceSpec, fleet: FleetSimulator) -> None:
        self.spec = spec
        self.fleet = fleet
        self.active = spec.active
        self.desired_version = 0
        self.state_seq = 0
        self.telemetry_seq = 0
        self.baseline_tps = random.uniform(20.0, 60.0)
        self.degradation = Degradation()
        self.connected = asyncio.Event()
        self._stopping = False
        self._backoff = RECONNECT_MIN_S
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=spec.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(spec.device_id, spec.password)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        fleet.attach(client)
        self.client = client
        self._topics: dict[str, str] = {}

    @property
    def device_id(self) -> str:
        """The device id (also its MQTT username)."""
        return self.spec.device_id

    def state(self, *, online: bool = True) -> DeviceState:
        """The state this device reports now."""
        return DeviceState(
            online=online,
            seq=self.state_seq,
            agent_version=self.spec.agent_version,
            device_class=self.spec.device_class,
            hardware=self.spec.hardware,
            active=self.active,
            desired_version=self.desired_version,
        )

    def publish(self, leaf: str, model: BaseModel, *, qos: int = 1, retain: bool = False) -> bool:
        """Publish `model` on this device's `leaf`; False when paho refused it."""
        topic = self._topics.get(leaf)
        if topic is None:
            topic = self._topics[leaf] = device_topic(self.device_id, leaf)
        info = self.client.publish(topic, model.model_dump_json(), qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.fleet.stats.publish_failures += 1
            return False
        return True

    def publish_state(self, *, online: bool = True) -> bool:
        """Publish the retained state with the next seq."""
        self.state_seq += 1
        return self.publish("state", self.state(online=online), retain=True)

    def publish_event(self, event: RolloutEvent) -> None:
        """Publish one rollout event (paho's refusal is counted in `publish_failures`)."""
        self.publish("events", event)

    def set_active(self, active: ActiveModel | None, *, desired_version: int | None = None) -> None:
        """Switch the active model and report it."""
        self.active = active
        if desired_version is not None:
            self.desired_version = desired_version
        self.publish_state()

    def publish_telemetry(self, samples: int = 1) -> bool:
        """Send one telemetry batch of `samples` samples with the next seq."""
        self.telemetry_seq += 1
        batch = Telemetry(
            seq=self.telemetry_seq,
            samples=[self.fleet.sample_factory(self) for _ in range(samples)],
        )
        ok = self.publish("telemetry", batch, qos=self.fleet.telemetry_qos)
        if ok:
            self.fleet.stats.telemetry_sent += 1
        return ok

    def connect(self) -> None:
        """Open the connection (blocking TCP connect; localhost or LAN is quick)."""
        will = self.state(online=False)
        self.client.will_set(
            device_topic(self.device_id, "state"), will.model_dump_json(), qos=1, retain=True
        )
        self.client.connect(self.fleet.host, self.fleet.port, keepalive=KEEPALIVE_S)

    def drop(self) -> None:
        """Cut the TCP connection without DISCONNECT, so the broker sends the Last Will."""
        self._stopping = True
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)

    def disconnect(self) -> None:
        """Report offline and disconnect cleanly."""
        self._stopping = True
        if self.client.is_connected():
            self.publish_state(online=False)
        self.client.disconnect()

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        if rc.is_failure:
            _LOGGER.warning("device %s refused by broker: %s", self.device_id, rc)
            self.fleet.stats.connect_failures += 1
            return
        self._backoff = RECONNECT_MIN_S
        self.fleet.stats.connected += 1
        client.subscribe(
            [(device_topic(self.device_id, "desired"), 1), (device_topic(self.device_id, "cmd"), 1)]
        )
        self.publish_state()
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if self.connected.is_set():
            self.fleet.stats.connected -= 1
        self.connected.clear()
        if not self._stopping:
            _LOGGER.info("device %s lost its connection (%s); reconnecting", self.device_id, rc)
            self.fleet.loop.call_later(self._backoff, self._reconnect)

    def _reconnect(self) -> None:
        if self._stopping:
            return
        try:
            self.client.reconnect()
        except OSError as exc:
            self._backoff = min(self._backoff * 2 or RECONNECT_MIN_S, RECONNECT_MAX_S)
            _LOGGER.debug("device %s reconnect failed: %s", self.device_id, exc)
            self.fleet.loop.call_later(self._backoff, self._reconnect)

    def _on_publish(self, _c: mqtt.Client, _ud: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self.fleet.stats.acked += 1

    def _on_message(self, _c: mqtt.Client, _ud: Any, message: mqtt.MQTTMessage) -> None:
        leaf = message.topic.rsplit("/", 1)[-1]
        try:
            if leaf == "desired":
                desired = DesiredState.model_validate_json(message.payload)
                self.fleet.stats.desired_received += 1
                self.fleet.run_hook(self.fleet.on_desired, self, desired)
            elif leaf == "cmd":
                command = Command.model_validate_json(message.payload)
                self.fleet.run_hook(self.fleet.on_command, self, command)
        except ValidationError as exc:
            _LOGGER.warning("device %s got an invalid %s message: %s", self.device_id, leaf, exc)
