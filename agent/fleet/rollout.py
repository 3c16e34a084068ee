"""The rollout executor: carries out the retained, versioned desired state on this device.

accepted -> downloading (resumable) -> verifying (signature + sha256) -> loading (a new slot,
beside the serving model) -> health_check (a smoke generation within the manifest's budget)
-> active (atomic switch, then commit of the slot pointer). Any failure leaves the previous
model serving and reports `failed` or `rolled_back` with the reason. The download step is
agent/fleet/staging.py, the health check agent/health.py, the events agent/fleet/rollout_events.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.capacity import DiskProbe, filesystem_usage
from agent.engines.base import LoadOptions
from agent.errors import AgentError
from agent.fleet.rollout_events import EventSink, RolloutFailed, RolloutReporter
from agent.fleet.slots import Slot, SlotStore, load_slot
from agent.fleet.staging import Selector, Stager
from agent.fleet.worker import QueueWorker
from agent.health import quality_probe, smoke_test
from agent.model_loading import EngineFactory, LoadedModel
from agent.runtime import ModelRuntime
from models.blobs import BlobStore
from models.errors import ModelsError
from models.files import atomic_write_bytes
from models.protocol import AgentSettings, DesiredModel, DesiredState, RolloutEvent

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "rollout-state.json"


@dataclass
class ExecutorDeps:
    """Everything the executor talks to, passed in so tests can use fakes."""

    slots: SlotStore
    store: BlobStore
    runtime: ModelRuntime
    select: Selector
    engine_factory: EngineFactory
    emit: EventSink
    trusted_keys: list[Ed25519PublicKey]
    data_dir: Path
    artifact_headers: dict[str, str] = field(default_factory=dict)
    memory_available: Callable[[], int] | None = None
    disk_usage: DiskProbe | None = filesystem_usage
    on_change: Callable[[], None] | None = None
    apply_settings: Callable[[AgentSettings | None], bool] | None = None
    apply_agent: Callable[[DesiredState], None] | None = None  # self-update (agent/fleet/update.py)
    load_options: Callable[[], LoadOptions] = LoadOptions  # the settings of the next load


class RolloutExecutor(QueueWorker[DesiredState]):
    """Applies desired states one at a time in a worker thread, newest first.

    `stop` ends it after the current step; desired states still queued are dropped.
    """

    def __init__(self, deps: ExecutorDeps) -> None:
        super().__init__("rollout")
        self.deps = deps
        self._state_path = deps.data_dir / STATE_FILE
        # The model this device last tried, as `{"model", "rollout_id"}`: an empty desired
        # state reports its unloading against that rollout.
        self.last_target: dict[str, str | None] | None = None
        self.applied_version = self._read_state()
        self._lock = threading.Lock()
        self.busy = False

    # -- lifecycle ---------------------------------------------------------------------------
    def restore(self) -> Slot | None:
        """Load the committed active slot (or the previous one when it will not load)."""
        if not self.deps.slots.has_active():
            return None  # nothing was ever committed, or the fleet wants no model here
        for slot in (self.deps.slots.active(), self.deps.slots.previous()):
            if slot is None:
                continue
            try:
                loaded = self._load(slot)
            except AgentError as exc:
                _LOGGER.error("slot %s does not load (%s); trying the previous one", slot.key, exc)
                continue
            self.deps.slots.activate(slot)
            self._activate(slot, loaded)
            return slot
        return None

    def submit(self, desired: DesiredState) -> None:
        """Called for every desired message; stale and repeated versions are ignored."""
        if desired.version <= self.applied_version:
            _LOGGER.info("ignoring desired v%d: v%d applied", desired.version, self.applied_version)
            return
        self._queue.put(desired)

    # -- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            desired = self._queue.get()
            while desired is not None and not self._queue.empty():
                newer = self._queue.get()  # coalesce: only the newest desired matters
                desired = newer if newer is None or newer.version > desired.version else desired
            if desired is None:
                return
            if desired.version <= self.applied_version:
                continue
            self.busy = True
            try:
                self.apply(desired)
            except Exception:
                _LOGGER.exception("applying desired v%d crashed", desired.version)
            finally:
                self.busy = False

    def apply(self, desired: DesiredState) -> bool:
        """Carry out one desired state (blocking): settings, models, then the agent itself."""
        if self.deps.apply_settings is not None:
            self.deps.apply_settings(desired.settings)  # refused as a whole, or applied
        served = self._apply_models(desired)
        if self.deps.apply_agent is not None:
            self.deps.apply_agent(desired)  # last: a new agent version restarts the process
        return served

    def _apply_models(self, desired: DesiredState) -> bool:
        """The models part; True when the device now serves what the desired state names."""
        if not desired.models:
            self._serve_nothing(desired.version)
            return True
        target = desired.models[0]
        self.last_target = {
            "model": f"{target.name}:{target.version}",
            "rollout_id": target.rollout_id,
        }
        report = RolloutReporter(self.deps.emit, desired.version, target)
        report("accepted")
        try:
            health = self._install_and_switch(target, report)
        except RolloutFailed as exc:
            _LOGGER.warning("desired v%d %s: %s", desired.version, exc.kind, exc)
            report(exc.kind, detail=str(exc))
            self._record(desired.version)
            return False
        except (AgentError, ModelsError, OSError) as exc:
            _LOGGER.warning("desired v%d failed: %s", desired.version, exc)
            report("failed", detail=str(exc))
            self._record(desired.version)
            return False
        report("active", detail=f"serving {target.name}:{target.version}", health=health)
        self._record(desired.version)
        return True

    def _serve_nothing(self, version: int) -> None:
        """A desired state with no model: unload what the fleet put here and serve nothing."""
        removed = self.deps.slots.deactivate()
        known = self.deps.runtime.known
        self.deps.runtime.clear()
        unloaded = f"{removed.name}:{removed.version}" if removed else known.ref if known else None
        if unloaded is not None:
            _LOGGER.warning("desired v%d names no model: unloaded %s", version, unloaded)
        last, self.last_target = self.last_target, None
        if last is not None:  # tell the rollout that put the model here that it is gone
            what = f"unloaded {unloaded}" if unloaded else "nothing was loaded"
            self.deps.emit(
                RolloutEvent(
                    desired_version=version,
                    rollout_id=last["rollout_id"],
                    model=unloaded or str(last["model"]),
                    kind="rolled_back",
                    detail=f"no model desired: {what}; serving no model",
                )
            )
        self._record(version)

    def _install_and_switch(
        self, target: DesiredModel, report: RolloutReporter
    ) -> dict[str, float]:
        slots = self.deps.slots
        current = slots.active()
        if current and (current.name, current.version) == (target.name, target.version):
            if self.deps.runtime.active is not None:
                return {}
        slot = slots.find(target.name, target.version) or self._download(target, report)
        report("loading", detail=f"{slot.variant} on {slot.engine}")
        loaded = self._load(slot)
        report("health_check")
        result = smoke_test(loaded)
        if not result.ok:
            loaded.engine.unload()
            raise RolloutFailed(
                f"health check failed: {result.reason}; kept "
                f"{current.name + ':' + current.version if current else 'no model'}",
                kind="rolled_back",
            )
        wrong = quality_probe(loaded, target.probe)
        if wrong is not None:
            loaded.engine.unload()
            kept = f"{current.name}:{current.version}" if current else "no model"
            raise RolloutFailed(f"{wrong}; kept {kept}", kind="rolled_back")
        self._activate(slot, loaded)
        slots.activate(slot)
        slots.prune()
        return result.as_dict()

    def _download(self, target: DesiredModel, report: RolloutReporter) -> Slot:
        deps = self.deps
        stager = Stager(
            slots=deps.slots,
            store=deps.store,
            select=deps.select,
            trusted_keys=deps.trusted_keys,
            headers=deps.artifact_headers,
            memory_available=deps.memory_available,
            disk_usage=deps.disk_usage,
        )
        return stager.stage(target, report)

    def _load(self, slot: Slot) -> LoadedModel:
        return load_slot(slot, self.deps.engine_factory, self.deps.load_options())

    def _activate(self, slot: Slot, loaded: LoadedModel) -> None:
        first = [loaded]

        def loader() -> LoadedModel:  # reused by the runtime after an idle unload
            return first.pop() if first else self._load(slot)

        self.deps.runtime.load_with(loader)
        if self.deps.on_change is not None:
            self.deps.on_change()

    # -- persisted version -------------------------------------------------------------------
    def _read_state(self) -> int:
        try:
            data: Any = json.loads(self._state_path.read_text(encoding="utf-8"))
            last = data.get("last_target")
            if isinstance(last, dict) and isinstance(last.get("model"), str):
                self.last_target = {"model": last["model"], "rollout_id": last.get("rollout_id")}
            return int(data.get("applied_version", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def _record(self, version: int) -> None:
        with self._lock:
            self.applied_version = max(self.applied_version, version)
            state = {"applied_version": self.applied_version, "last_target": self.last_target}
            payload = json.dumps(state).encode()
            atomic_write_bytes(self._state_path, payload)
        if self.deps.on_change is not None:
            self.deps.on_change()
