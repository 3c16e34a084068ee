"""Fleet mode: probe, enroll, connect, carry out rollouts, send telemetry, serve the REST API.

`run(settings)` is what `edgefleet-agent serve --control-plane URL` calls. `AgentNode` is the
part without the REST server and hardware probe, so tests and the demo can run real agents
with any engine factory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from agent import __version__
from agent.commands import (
    CommandRunner,
    benchmark_action,
    reprobe_action,
    restart_engine_action,
)
from agent.engine_benchmark import hardware_digest
from agent.enroll import Enrollment, ensure_enrolled
from agent.install_layout import AgentInstall
from agent.keepalive import FOREVER
from agent.log_buffer import LogBuffer, logs_action
from agent.model_loading import probe_profile
from agent.mqtt import AgentMqtt, MqttSettings, parse_broker_url
from agent.mqtt_identity import client_certificate_files
from agent.outbox import Outbox
from agent.remote_settings import RemoteSettings, Setting, SettingRefused, log_level_setting
from agent.rollout import ExecutorDeps, RolloutExecutor, Selector
from agent.runtime import EngineFactory, ModelRuntime
from agent.server.metrics import ServingMetrics
from agent.slots import SlotStore
from agent.supervisor import RESTART_EXIT, ROOT_ENV
from agent.telemetry import TelemetrySampler
from agent.update import AgentUpdater
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
    probe: Callable[[], dict[str, Any]] = probe_profile  # what `reprobe` runs
    parallel: int | None = None  # request slots a batching engine loads with (None/0: auto)
    set_api_key_sha256: Callable[[str], None] | None = None  # the REST API's key, if it has one
    api_key_sha256: str = ""
    agent_root: Path | None = None  # versioned installs (agent/install_layout.py); None: none
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
        self._telemetry_interval_s = options.telemetry_interval_s
        self._parallel = options.parallel or 0  # request slots of the next model load (0: auto)
        self.remote = RemoteSettings(data, self._settings())
        self.remote.apply(self.remote.restore())  # what the fleet set last time, before any run
        self.updater = self._updater()
        update = self.updater
        self.executor = RolloutExecutor(ExecutorDeps(
            slots=slots, store=ArtifactStore(data / "store"),
            runtime=runtime, select=options.select, engine_factory=options.engine_factory,
            emit=self.outbox.sink(enrollment.device_id, "events"),
            trusted_keys=enrollment.trusted_keys(), data_dir=data,
            artifact_headers=enrollment.artifact_headers(), memory_available=mem,
            on_change=self._publish_state,
            apply_settings=self._apply_settings,
            apply_agent=update.apply if update is not None else None,
            parallel=lambda: self._parallel,
        ))  # fmt: skip
        self.commands = self._command_runner(slots)
        if serving is not None:
            serving.extra = self._fleet_metrics
        access = enrollment.mqtt
        cert, key = client_certificate_files(data) or (None, None)
        self.mqtt = AgentMqtt(
            MqttSettings(
                host=options.mqtt_host or access.host, port=options.mqtt_port or access.port,
                device_id=enrollment.device_id, username=access.username,
                password=access.password,
                tls=access.tls if options.mqtt_tls is None else options.mqtt_tls,
                ca_pem=access.ca_pem, client_cert_file=cert, client_key_file=key,
            ),
            self.outbox, state=self.state, on_desired=self.executor.submit,
            on_command=self.commands.submit,
        )  # fmt: skip

    def _command_runner(self, slots: SlotStore) -> CommandRunner:
        factory = self.options.engine_factory

        def busy() -> bool:  # commands wait for a rollout instead of racing its swap
            return self.executor.busy

        actions = {
            "reprobe": reprobe_action(self.options.probe, self._apply_hardware),
            "restart-engine": restart_engine_action(
                self.runtime, slots, factory, busy=busy, on_change=self._publish_state,
                parallel=lambda: self._parallel,
            ),
            "benchmark": benchmark_action(self.runtime, slots, factory, busy=busy),
            "logs": logs_action(self.log_buffer),
        }
        return CommandRunner(actions, self.outbox.sink(self.enrollment.device_id, "cmd/result"))

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
            ("outbox_dropped_total", "counter",
             "Telemetry batches dropped because the outbox was full (never events).",
             box["dropped"]),
            ("mqtt_connected", "gauge", "1 while connected to the broker.",
             int(self.mqtt.connected)),
            ("mqtt_reconnects_total", "counter", "Connection losses and failed attempts.",
             self.mqtt.reconnects),
        ]  # fmt: skip

    def _updater(self) -> AgentUpdater | None:
        options = self.options
        if options.agent_root is None or options.request_restart is None:
            return None
        return AgentUpdater(
            AgentInstall(options.agent_root), running_version=options.agent_version,
            trusted_keys=self.enrollment.trusted_keys(),
            emit=self.outbox.sink(self.enrollment.device_id, "events"),
            request_restart=options.request_restart,
            headers=self.enrollment.artifact_headers(),
        )  # fmt: skip

    def _healthy(self, timeout_s: float) -> bool:
        """Connected to the broker, and serving the committed model if there is one."""
        if not self.mqtt.wait_connected(timeout_s):
            return False
        return not self.executor.deps.slots.has_active() or self.runtime.active is not None

    def _settings(self) -> dict[str, Setting]:
        """The settings the control plane may change on this agent, and how."""
        runtime, options = self.runtime, self.options

        def keep_alive() -> float:
            value = runtime.default_keep_alive
            return -1.0 if value == FOREVER else value

        def set_keep_alive(value: float) -> None:
            runtime.default_keep_alive = FOREVER if value < 0 else value

        def set_parallel(value: int) -> None:  # at the next load (rollout, restart-engine)
            self._parallel = value

        def set_interval(value: float) -> None:
            self._telemetry_interval_s = value

        def set_key(value: str) -> None:
            if options.set_api_key_sha256 is None:
                raise SettingRefused("api_key_sha256: this agent serves no REST API to key")
            options.set_api_key_sha256(value)
            options.api_key_sha256 = value

        def check_key(value: str) -> None:
            if options.set_api_key_sha256 is None:
                raise SettingRefused("api_key_sha256: this agent serves no REST API to key")

        return {
            "parallel": Setting(current=lambda: self._parallel, apply=set_parallel),
            "keep_alive_s": Setting(current=keep_alive, apply=set_keep_alive),
            "telemetry_interval_s": Setting(
                current=lambda: self._telemetry_interval_s, apply=set_interval
            ),
            "log_level": log_level_setting(),
            "api_key_sha256": Setting(current=lambda: options.api_key_sha256,
                                      apply=set_key, check=check_key),
        }  # fmt: skip

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
            active = ActiveModel(name=loaded.name, version=version, variant=loaded.variant_id,
                                 engine=loaded.engine_name)  # fmt: skip
        return DeviceState(
            online=True, seq=self._seq, agent_version=self.options.agent_version,
            device_class=self.device_class, hardware=self.hardware,
            hardware_digest=self._hardware_digest, active=active,
            desired_version=self.executor.applied_version,
            settings=self.remote.effective(), settings_error=self.remote.error,
        )  # fmt: skip

    def start(self) -> None:
        """Load the committed model, then connect and start working (returns at once)."""
        slot = self.executor.restore()
        _LOGGER.info("serving %s after start", slot.key if slot else "no model")
        self.executor.start()
        self.commands.start()
        self.mqtt.start()
        if self.updater is not None:
            self.updater.on_start(self._healthy)
        if self._telemetry_interval_s > 0:
            self._telemetry = threading.Thread(target=self._telemetry_loop, daemon=True,
                                               name="telemetry")  # fmt: skip
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
        while not self._stop.wait(self._telemetry_interval_s):
            self._telemetry_seq += 1
            runtime = self.runtime
            sample = sampler.sample(queue_depth=runtime.waiting, batch=runtime.batch_stats())
            batch = Telemetry(seq=self._telemetry_seq, samples=[sample])
            self.mqtt.send("telemetry", batch, qos=1, droppable=True)


def run(settings: Any) -> None:
    """Fleet mode for `edgefleet-agent serve`: enroll if needed, then serve until stopped."""
    from agent.engines.registry import create_engine, installed_engines
    from agent.runtime import parse_keep_alive
    from agent.selection import select_variant
    from agent.server.app import create_app
    from agent.server.limits import RequestLimits
    from agent.server.serve import serve

    data_dir = Path(settings.data_dir)
    profile = probe_profile()
    enrollment = ensure_enrolled(
        settings.control_plane_url, settings.enrollment_token, data_dir,
        hardware=profile, agent_version=AGENT_VERSION,
    )  # fmt: skip
    installed = installed_engines()
    metrics = ServingMetrics()
    runtime = ModelRuntime(max_waiting=settings.queue_depth, observer=metrics,
                           keep_alive=parse_keep_alive(settings.keep_alive))  # fmt: skip
    host, port, tls = _mqtt_override(settings.mqtt_url)
    if getattr(settings, "benchmark_engines", False):
        # The variant is chosen before its files are downloaded, so there is nothing to time.
        _LOGGER.warning("benchmark_engines is ignored in fleet mode: rollouts keep the static "
                        "choice (see docs/agent.md)")  # fmt: skip
    app = create_app(runtime, api_key=settings.api_key, metrics=metrics,
                     limits=RequestLimits.of(settings))  # fmt: skip
    restart = threading.Event()

    def request_restart() -> None:  # a new agent version is current: exit for the supervisor
        restart.set()
        os.kill(os.getpid(), signal.SIGTERM)

    root = os.environ.get(ROOT_ENV)
    options = NodeOptions(
        data_dir=data_dir, engine_factory=create_engine,
        select=lambda manifest: select_variant(manifest, profile, installed),
        hardware=profile, device_class=str(profile.get("device_class", "")),
        mqtt_host=host, mqtt_port=port, mqtt_tls=tls,
        parallel=getattr(settings, "parallel", None),
        set_api_key_sha256=lambda digest: setattr(app.state, "api_key_sha256", digest),
        api_key_sha256=hashlib.sha256(settings.api_key.encode()).hexdigest()
        if settings.api_key else "",
        agent_root=Path(root) if root else None, request_restart=request_restart,
    )  # fmt: skip
    node = AgentNode(enrollment, runtime, options, serving=metrics)
    node.start()
    try:
        asyncio.run(serve(app, runtime, host=settings.host, port=settings.port,
                          log_level=settings.log_level))  # fmt: skip
    finally:
        node.stop()
    if restart.is_set():
        raise SystemExit(RESTART_EXIT)


def _mqtt_override(url: str | None) -> tuple[str | None, int | None, bool | None]:
    """`mqtt[s]://host:port` from the settings, overriding what enrollment said."""
    if not url:
        return None, None, None
    return parse_broker_url(url)
