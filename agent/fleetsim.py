"""A fleet of simulated devices in one process, for load tests and rollout rehearsals.

Each device has its own MQTT connection (username = device id), a Last Will that marks it
offline, a retained `state`, and sends telemetry batches. All connections are paho clients
driven from ONE asyncio loop through paho's socket callbacks (one file descriptor per device,
no thread per client), so 10,000 devices fit in a process with a 20,000 fd limit. Rollout
behaviour plugs in per device through `on_desired` / `on_command` and `publish_event`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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

_LOGGER = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0  # paho's keepalive bookkeeping for every client
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
KEEPALIVE_S = 60
CONNECTS_IN_FLIGHT = 200  # CONNECTs awaiting CONNACK at once; more only queues in the broker

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
    device_class: str = "cpu-x86_64"
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


def synthetic_sample(device: SimulatedDevice) -> TelemetrySample:
    """Plausible numbers around a per-device baseline."""
    base = device.baseline_tps
    return TelemetrySample(
        tokens_per_s=round(random.gauss(base, base * 0.05), 2),
        ttft_ms=round(random.gauss(80.0, 8.0), 2),
        requests=random.randint(0, 5),
        queue_depth=random.randint(0, 2),
        errors=0,
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
        client.on_socket_open = fleet._socket_open
        client.on_socket_close = fleet._socket_close
        client.on_socket_register_write = fleet._register_write
        client.on_socket_unregister_write = fleet._unregister_write
        self.client = client

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
        info = self.client.publish(
            device_topic(self.device_id, leaf), model.model_dump_json(), qos=qos, retain=retain
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.fleet.stats.publish_failures += 1
            return False
        return True

    def publish_state(self, *, online: bool = True) -> bool:
        """Publish the retained state with the next seq."""
        self.state_seq += 1
        return self.publish("state", self.state(online=online), retain=True)

    def publish_event(self, event: RolloutEvent) -> bool:
        """Publish one rollout event (for rollout behaviour plugged in by tests)."""
        return self.publish("events", event)

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
                self.fleet._call_hook(self.fleet.on_desired, self, desired)
            elif leaf == "cmd":
                command = Command.model_validate_json(message.payload)
                self.fleet._call_hook(self.fleet.on_command, self, command)
        except ValidationError as exc:
            _LOGGER.warning("device %s got an invalid %s message: %s", self.device_id, leaf, exc)


class FleetSimulator:
    """N simulated devices on one asyncio loop; `start`, `run_telemetry`, `stop`."""

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        *,
        host: str,
        port: int,
        telemetry_qos: int = 1,
        on_desired: DesiredHook | None = None,
        on_command: CommandHook | None = None,
        sample_factory: SampleFactory = synthetic_sample,
    ) -> None:
        self.host = host
        self.port = port
        self.telemetry_qos = telemetry_qos
        self.on_desired = on_desired
        self.on_command = on_command
        self.sample_factory = sample_factory
        self.stats = FleetStats()
        self.loop = asyncio.get_running_loop()
        self.devices = {spec.device_id: SimulatedDevice(spec, self) for spec in specs}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Connect every device, at most CONNECTS_IN_FLIGHT at a time, and wait for all."""
        self._spawn(self._misc_loop())
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def connect_one(device: SimulatedDevice) -> None:
            async with gate:
                try:
                    device.connect()
                except OSError as exc:
                    self.stats.connect_failures += 1
                    _LOGGER.warning("device %s cannot connect: %s", device.device_id, exc)
                    return
                await device.connected.wait()

        await asyncio.wait_for(
            asyncio.gather(*(connect_one(d) for d in self.devices.values())), timeout_s
        )

    async def run_telemetry(
        self, *, interval_s: float, batches: int | None = None, samples: int = 1
    ) -> None:
        """Every device sends a batch each `interval_s` (phases spread); `batches` then stop."""

        async def one(device: SimulatedDevice) -> None:
            await asyncio.sleep(random.uniform(0.0, interval_s))
            sent = 0
            while batches is None or sent < batches:
                if device.connected.is_set() and device.publish_telemetry(samples):
                    sent += 1
                await asyncio.sleep(interval_s)

        await asyncio.gather(*(one(d) for d in self.devices.values()))

    async def stop(self) -> None:
        """Disconnect every device cleanly and cancel the background tasks."""
        for device in self.devices.values():
            device.disconnect()
        await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call_hook(
        self, hook: Callable[..., Any] | None, device: SimulatedDevice, msg: Any
    ) -> None:
        if hook is None:
            return
        try:
            result = hook(device, msg)
        except Exception:
            _LOGGER.exception("hook failed on device %s", device.device_id)
            return
        if inspect.isawaitable(result):
            self._spawn(self._finish_hook(device, result))
        elif isinstance(result, CommandResult):
            device.publish("cmd/result", result)

    async def _finish_hook(self, device: SimulatedDevice, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception:
            _LOGGER.exception("hook failed on device %s", device.device_id)
            return
        if isinstance(result, CommandResult):
            device.publish("cmd/result", result)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            for device in self.devices.values():
                if device.client.socket() is not None:
                    device.client.loop_misc()

    def _socket_open(self, client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)

    def _socket_close(self, _client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _register_write(self, client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _unregister_write(self, _client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)
