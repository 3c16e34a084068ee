"""Fleet mode: probe, enroll, connect, carry out rollouts, send telemetry, serve the REST API.

`run(settings)` is what `edgefleet-agent serve --control-plane URL` calls. `AgentNode` is the
part without the REST server and hardware probe, so tests and the demo can run real agents
with any engine factory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from agent import __version__
from agent.engine_benchmark import hardware_digest
from agent.engines.base import LoadOptions
from agent.fleet.commands import (
    CommandRunner,
    benchmark_action,
    reprobe_action,
    restart_engine_action,
)
from agent.fleet.enroll import Enrollment
from agent.fleet.install_layout import AgentInstall
from agent.fleet.log_buffer import LogBuffer, logs_action
from agent.fleet.mqtt import AgentMqtt, MqttSettings, parse_broker_url
from agent.fleet.mqtt_identity import client_certificate_files
from agent.fleet.node_settings import NodeKnobs, node_settings
from agent.fleet.outbox import Outbox
from agent.fleet.remote_settings import RemoteSettings
from agent.fleet.rollout import ExecutorDeps, RolloutExecutor
from agent.fleet.slots import SlotStore
from agent.fleet.staging import Selector
from agent.fleet.telemetry import TelemetrySampler
from agent.fleet.update import AgentUpdater
from agent.model_loading import EngineFactory, probe_profile
from agent.runtime import ModelRuntime
from agent.server.metrics import ServingMetrics
from models.protocol import ActiveModel, AgentSettings, DeviceState, Telemetry
from models.store import ArtifactStore

_LOGGER = logging.getLogger(__name__)

TELEMETRY_INTERVAL_S = 10.0
AGENT_VERSION = __version__  # a release build writes its version into agent/__init__.py


@dataclass
class NodeOptions:
    """What an AgentNode needs besides its enrollment."""

    data_dir: Path
    engine_factory: EngineFactory
    select: Selector
    hardware: dict[str, Any]
    device_class: str = ""
    agent_version: str = AGENT_VERSION
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    mqtt_tls: bool | None = None  # None: what enrollment said
    telemetry_interval_s: float = TELEMETRY_INTERVAL_S
    check_memory: bool = True
    probe: Callable[[], dict[str, Any]] = lambda: probe_profile().model_dump(mode="json")
    # ^ what `reprobe` runs: the profile as the control plane stores it
    parallel: int | None = None  # request slots a batching engine loads with (None/0: auto)
    load_options: LoadOptions = field(default_factory=LoadOptions)  # the settings' (threads...)
    set_api_key_sha256: Callable[[str], None] | None = None  # the REST API's key, if it has one
    api_key_sha256: str = ""
    agent_root: Path | None = None  # versioned installs (agent/fleet/install_layout.py); None: none
    request_restart: Callable[[], None] | None = None  # exit for the supervisor to restart us


class AgentNode:
    """One device: MQTT connection, outbox, slots, rollout executor, commands and telemetry."""

    def __init__(
        self,
        enrollment: Enrollment,
        runtime: ModelRuntime,
        options: NodeOptions,
        serving: ServingMetrics | None = None,
    ) -> None:
        self.enrollment, self.runtime, self.options = enrollment, runtime, options
        self.serving = serving
        data = options.data_dir
        self.outbox = Outbox(data / "outbox.db")
        self._seq = int(time.time())
        self._telemetry_seq = int(time.time() * 1000)
        self._stop = threading.Event()
        self._telemetry: threading.Thread | None = None
        self.hardware, self.device_class = options.hardware, options.device_class
        self._hardware_digest = hardware_digest(options.hardware)
        mem = (lambda: int(psutil.virtual_memory().available)) if options.check_memory else None
        slots = SlotStore(data / "slots")
        self.log_buffer = LogBuffer()
        logging.getLogger("agent").addHandler(self.log_buffer)
        self.knobs = NodeKnobs(
            options.telemetry_interval_s, options.parallel or 0, options.api_key_sha256
        )
        self.remote = RemoteSettings(
            data, node_settings(runtime, self.knobs, options.set_api_key_sha256)
        )
        self.remote.apply(self.remote.restore())  # what the fleet set last time, before any run
        self.updater = self._updater()
        update = self.updater
        self.executor = RolloutExecutor(
            ExecutorDeps(
                slots=slots,
                store=ArtifactStore(data / "store"),
                runtime=runtime,
                select=options.select,
                engine_factory=options.engine_factory,
                emit=self.outbox.sink(enrollment.device_id, "events"),
                trusted_keys=enrollment.trusted_keys(),
                data_dir=data,
                artifact_headers=enrollment.artifact_headers(),
                memory_available=mem,
                on_change=self._publish_state,
                apply_settings=self._apply_settings,
                apply_agent=update.apply if update is not None else None,
                load_options=self._load_options,
            )
        )
        self.commands = self._command_runner(slots)
        if serving is not None:
            serving.extra = self._fleet_metrics
        access = enrollment.mqtt
        cert, key = client_certificate_files(data) or (None, None)
        self.mqtt = AgentMqtt(
            MqttSettings(
                host=options.mqtt_host or access.host,
                port=options.mqtt_port or access.port,
                device_id=enrollment.device_id,
                username=access.username,
                password=access.password,
                tls=access.tls if options.mqtt_tls is None else options.mqtt_tls,
                ca_pem=access.ca_pem,
                client_cert_file=cert,
                client_key_file=key,
            ),
            self.outbox,
            state=self.state,
            on_desired=self.executor.submit,
            on_command=self.commands.submit,
        )

    def _command_runner(self, slots: SlotStore) -> CommandRunner:
        factory = self.options.engine_factory

        def busy() -> bool:  # commands wait for a rollout instead of racing its swap
            return self.executor.busy

        actions = {
            "reprobe": reprobe_action(self.options.probe, self._apply_hardware),
            "restart-engine": restart_engine_action(
                self.runtime,
                slots,
                factory,
                busy=busy,
                on_change=self._publish_state,
                load_options=self._load_options,
            ),
            "benchmark": benchmark_action(self.runtime, slots, factory, busy=busy),
            "logs": logs_action(self.log_buffer),
        }
        return CommandRunner(actions, self.outbox.sink(self.enrollment.device_id, "cmd/result"))

    def _load_options(self) -> LoadOptions:
        """The settings' load options with the parallel knob of now (the fleet may change it)."""
        return replace(self.options.load_options, parallel=self.knobs.parallel)

    def _publish_state(self) -> None:
        # Called by the executor and commands, which exist before self.mqtt; they only run
        # once start() has started the MQTT client.
        self.mqtt.publish_state()

    def _fleet_metrics(self) -> list[tuple[str, str, str, float]]:
        """The outbox and MQTT samples on the agent's /metrics."""
        box = self.outbox.stats()
        return [
            ("outbox_messages", "gauge", "Messages waiting for the broker.", box["rows"]),
            ("outbox_bytes", "gauge", "Payload bytes waiting for the broker.", box["bytes"]),
            (
                "outbox_dropped_total",
                "counter",
                "Telemetry batches dropped because the outbox was full (never events).",
                box["dropped"],
            ),
            (
                "mqtt_connected",
                "gauge",
                "1 while connected to the broker.",
                int(self.mqtt.connected),
            ),
            (
                "mqtt_reconnects_total",
                "counter",
                "Connection losses and failed attempts.",
                self.mqtt.reconnects,
            ),
        ]

    def _updater(self) -> AgentUpdater | None:
        options = self.options
        if options.agent_root is None or options.request_restart is None:
            return None
        return AgentUpdater(
            AgentInstall(options.agent_root),
            running_version=options.agent_version,
            trusted_keys=self.enrollment.trusted_keys(),
            emit=self.outbox.sink(self.enrollment.device_id, "events"),
            request_restart=options.request_restart,
            headers=self.enrollment.artifact_headers(),
        )

    def _healthy(self, timeout_s: float) -> bool:
        """Connected to the broker, and serving the committed model if there is one."""
        if not self.mqtt.wait_connected(timeout_s):
            return False
        return not self.executor.deps.slots.has_active() or self.runtime.active is not None

    def _apply_settings(self, settings: AgentSettings | None) -> bool:
        applied = self.remote.apply(settings)
        self.mqtt.publish_state()
        return applied

    def _apply_hardware(self, profile: dict[str, Any]) -> str:
        """Adopt a fresh hardware profile and republish the retained state; the new digest."""
        self.hardware = profile
        self.device_class = str(profile.get("device_class", "")) or self.device_class
        self._hardware_digest = hardware_digest(profile)
        self.mqtt.publish_state()
        return self._hardware_digest

    @property
    def device_id(self) -> str:
        """This device's id."""
        return self.enrollment.device_id

    def state(self) -> DeviceState:
        """The retained state this device publishes."""
        self._seq += 1
        loaded = self.runtime.active
        active = None
        if loaded is not None:
            version = loaded.manifest.version if loaded.manifest else ""
            active = ActiveModel(
                name=loaded.name,
                version=version,
                variant=loaded.variant_id,
                engine=loaded.engine_name,
            )
        return DeviceState(
            online=True,
            seq=self._seq,
            agent_version=self.options.agent_version,
            device_class=self.device_class,
            hardware=self.hardware,
            hardware_digest=self._hardware_digest,
            active=active,
            desired_version=self.executor.applied_version,
            settings=self.remote.effective(),
            settings_error=self.remote.error,
        )

    def start(self) -> None:
        """Load the committed model, then connect and start working (returns at once)."""
        slot = self.executor.restore()
        _LOGGER.info("serving %s after start", slot.key if slot else "no model")
        self.executor.start()
        self.commands.start()
        self.mqtt.start()
        if self.updater is not None:
            self.updater.on_start(self._healthy)
        if self.knobs.telemetry_interval_s > 0:
            self._telemetry = threading.Thread(
                target=self._telemetry_loop, daemon=True, name="telemetry"
            )
            self._telemetry.start()

    def stop(self) -> None:
        """Disconnect (online=false), stop the executor and close the outbox."""
        self._stop.set()
        self.mqtt.stop()
        self.commands.stop()
        self.executor.stop()
        if self._telemetry is not None:
            self._telemetry.join(timeout=5)
        self.outbox.close()
        logging.getLogger("agent").removeHandler(self.log_buffer)

    def _telemetry_loop(self) -> None:
        sampler = TelemetrySampler(self.serving)
        while not self._stop.wait(self.knobs.telemetry_interval_s):
            self._telemetry_seq += 1
            runtime = self.runtime
            sample = sampler.sample(queue_depth=runtime.waiting, batch=runtime.batch_stats())
            batch = Telemetry(seq=self._telemetry_seq, samples=[sample])
            self.mqtt.send("telemetry", batch, qos=1, droppable=True)


def run(settings: Any) -> None:
    """Fleet mode for `edgefleet-agent serve`: enroll if needed, then serve until stopped."""
    from agent.fleet.mode import run_fleet

    run_fleet(settings)


def _mqtt_override(url: str | None) -> tuple[str | None, int | None, bool | None]:
    """`mqtt[s]://host:port` from the settings, overriding what enrollment said."""
    if not url:
        return None, None, None
    return parse_broker_url(url)
