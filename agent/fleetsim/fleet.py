"""A fleet of simulated devices in one process, for load tests and rollout rehearsals.

Each device has its own MQTT connection (username = device id), a Last Will that marks it
offline, a retained `state`, and sends telemetry batches. All connections are paho clients
driven from ONE asyncio loop through paho's socket callbacks (one file descriptor per device,
no thread per client), so 10,000 devices fit in a process with a 20,000 fd limit. Rollout
behaviour plugs in per device through `on_desired` / `on_command` and `publish_event`;
`RolloutBehaviour` is a ready one (fault injection included).

Modules: `fleetsim` (the fleet and its loop), `fleetsim_device` (one simulated agent),
`fleetsim_rollout` (what a simulated agent does with a desired state).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from agent.fleetsim.device import (
    CommandHook,
    DesiredHook,
    DeviceSpec,
    FleetStats,
    SampleFactory,
    SimulatedDevice,
    synthetic_sample,
)
from agent.fleetsim.rollout import RolloutBehaviour
from models.protocol import CommandResult

_LOGGER = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0  # paho's keepalive bookkeeping for every client
CONNECTS_IN_FLIGHT = 200  # CONNECTs awaiting CONNACK at once; more only queues in the broker

__all__ = [
    "CommandHook",
    "DesiredHook",
    "DeviceSpec",
    "FleetSimulator",
    "FleetStats",
    "RolloutBehaviour",
    "SampleFactory",
    "SimulatedDevice",
    "synthetic_sample",
]


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
        self._watched: set[Any] = set()  # sockets with a writer on the loop (buffer was full)

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

    def run_hook(self, hook: Callable[..., Any] | None, device: SimulatedDevice, msg: Any) -> None:
        """Run a device hook; an awaitable result finishes as a task, a CommandResult is sent."""
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

    def attach(self, client: mqtt.Client) -> None:
        """Drive `client`'s socket from this fleet's event loop (no thread per client)."""
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write

    def _socket_open(self, client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)

    def _socket_close(self, _client: mqtt.Client, _ud: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        self._watched.discard(sock)

    def _register_write(self, client: mqtt.Client, _ud: Any, sock: Any) -> None:
        # paho asks for this on every publish. Watching the socket for writability means two
        # epoll changes per message (a sixth of the simulator's CPU at 10,000 devices); the
        # socket almost always takes the bytes at once, so write on the next loop turn and
        # watch it only when the kernel's buffer is full.
        self.loop.call_soon(self._write_now, client, sock)

    def _write_now(self, client: mqtt.Client, sock: Any) -> None:
        if client.socket() != sock:  # (not `is not`: mypy would narrow sock to paho's type)
            return  # closed or reconnected meanwhile
        client.loop_write()
        if client.want_write() and sock not in self._watched:
            self._watched.add(sock)
            self.loop.add_writer(sock, client.loop_write)

    def _unregister_write(self, _client: mqtt.Client, _ud: Any, sock: Any) -> None:
        if sock in self._watched:
            self._watched.discard(sock)
            self.loop.remove_writer(sock)
