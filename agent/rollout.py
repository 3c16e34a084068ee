"""The rollout executor: carries out the retained, versioned desired state on this device.

accepted -> downloading (resumable) -> verifying (signature + sha256) -> loading (a new slot,
beside the serving model) -> health_check (a smoke generation within the manifest's budget)
-> active (atomic switch, then commit of the slot pointer). Any failure leaves the previous
model serving and reports `failed` or `rolled_back` with the reason.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.engines.base import Completion, SamplingParams
from agent.errors import AgentError
from agent.runtime import EngineFactory, LoadedModel, ModelRuntime
from agent.slots import Slot, SlotStore, load_slot
from models.errors import ModelsError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, HealthBudget, Manifest
from models.protocol import DesiredModel, DesiredState, EventKind, RolloutEvent
from models.signing import (
    atomic_write_bytes,
    safe_relative_path,
    verify_manifest,
    verify_model_dir,
)

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "rollout-state.json"
PROGRESS_EVERY_BYTES = 8 << 20
HTTP_TIMEOUT_S = 30.0


class RolloutFailed(AgentError):
    """One step of a rollout failed; `kind` is the event to report (failed or rolled_back)."""

    def __init__(self, reason: str, kind: EventKind = "failed") -> None:
        super().__init__(reason)
        self.kind: EventKind = kind


class Fetcher(Protocol):
    """The part of models.store.ArtifactStore the executor uses."""

    def fetch(
        self,
        url: str,
        sha256: str,
        size: int,
        *,
        headers: Mapping[str, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path: ...


class Selection(Protocol):
    """What agent.selection.select_variant returns (the fields used here)."""

    @property
    def variant_id(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def device(self) -> str: ...


Selector = Callable[[Manifest], Selection]
EventSink = Callable[[RolloutEvent], None]


@dataclass
class ExecutorDeps:
    """Everything the executor talks to, passed in so tests can use fakes."""

    slots: SlotStore
    store: Fetcher
    runtime: ModelRuntime
    select: Selector
    engine_factory: EngineFactory
    emit: EventSink
    trusted_keys: list[Ed25519PublicKey]
    data_dir: Path
    artifact_headers: dict[str, str] = field(default_factory=dict)
    memory_available: Callable[[], int] | None = None
    on_change: Callable[[], None] | None = None


def fetch_bytes(url: str, headers: Mapping[str, str]) -> bytes:
    """GET a small document (manifest, signature) over HTTP(S), or read a file:// URL."""
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("", "file"):
            return Path(url2pathname(parsed.path)).read_bytes()
        import httpx

        resp = httpx.get(url, headers=dict(headers), timeout=HTTP_TIMEOUT_S, follow_redirects=True)
        resp.raise_for_status()
        return resp.content
    except Exception as exc:  # httpx and OS errors alike: the reason goes into the event
        raise RolloutFailed(f"cannot fetch {url}: {exc}") from exc


def sibling_url(manifest_url: str, rel_path: str) -> str:
    """The URL of a file next to the manifest."""
    return manifest_url.rsplit("/", 1)[0] + "/" + rel_path


def file_url(target: DesiredModel, rel_path: str) -> str:
    """Where one variant file of the desired model is downloaded from."""
    if target.files_url:
        return target.files_url.rstrip("/") + "/" + rel_path
    return sibling_url(target.manifest_url, rel_path)


class RolloutExecutor:
    """Applies desired states one at a time in a worker thread, newest first."""

    def __init__(self, deps: ExecutorDeps) -> None:
        self.deps = deps
        self._state_path = deps.data_dir / STATE_FILE
        self.applied_version = self._read_state()
        self._pending: queue.Queue[DesiredState | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.busy = False

    # -- lifecycle ---------------------------------------------------------------------------
    def restore(self) -> Slot | None:
        """Load the committed active slot (or the previous one when it will not load)."""
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

    def start(self) -> None:
        """Start the worker thread."""
        self._worker = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop after the current step."""
        self._pending.put(None)
        if self._worker is not None:
            self._worker.join(timeout=10)

    def submit(self, desired: DesiredState) -> None:
        """Called for every desired message; stale and repeated versions are ignored."""
        if desired.version <= self.applied_version:
            _LOGGER.info("ignoring desired v%d: v%d applied", desired.version, self.applied_version)
            return
        self._pending.put(desired)

    # -- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            desired = self._pending.get()
            while desired is not None and not self._pending.empty():
                newer = self._pending.get()  # coalesce: only the newest desired matters
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
        """Carry out one desired state (blocking); True when its model is now serving."""
        if not desired.models:
            self._record(desired.version)
            return True
        target = desired.models[0]
        report = _Reporter(self.deps.emit, desired.version, target)
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

    def _install_and_switch(self, target: DesiredModel, report: _Reporter) -> dict[str, float]:
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
        self._activate(slot, loaded)
        slots.activate(slot)
        slots.prune()
        return result.as_dict()

    def _download(self, target: DesiredModel, report: _Reporter) -> Slot:
        headers = self.deps.artifact_headers
        staging_root = self.deps.slots.staging_dir(target.name, target.version, "download")
        (staging_root / MANIFEST_FILE).write_bytes(fetch_bytes(target.manifest_url, headers))
        sig_url = sibling_url(target.manifest_url, SIGNATURE_FILE)
        (staging_root / SIGNATURE_FILE).write_bytes(fetch_bytes(sig_url, headers))
        report("verifying", detail="manifest signature")
        try:
            manifest = verify_manifest(staging_root, self.deps.trusted_keys)
        except ModelsError as exc:
            raise RolloutFailed(f"manifest rejected: {exc}") from exc
        if (manifest.name, manifest.version) != (target.name, target.version):
            raise RolloutFailed(f"manifest is {manifest.ref}, not {target.name}:{target.version}")
        try:
            selection = self.deps.select(manifest)
        except AgentError as exc:
            raise RolloutFailed(f"no variant fits this device: {exc}") from exc
        variant = manifest.variant(selection.variant_id)
        self._check_memory(variant.memory_bytes, manifest.ref)
        total, done_before = variant.size_bytes, 0
        report.progress(0, total)
        for entry in variant.files:
            def progress(done: int, size: int, base: int = done_before) -> None:
                report.progress(base + done, total)

            blob = self.deps.store.fetch(
                file_url(target, entry.path), entry.sha256, entry.size,
                headers=headers, progress=progress,
            )  # fmt: skip
            dest = staging_root / safe_relative_path(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blob, dest)
            done_before += entry.size
        report("verifying", detail="sha256 of every file", bytes_done=total, bytes_total=total)
        try:
            verify_model_dir(staging_root, self.deps.trusted_keys, [variant.id])
        except ModelsError as exc:
            raise RolloutFailed(f"artifact rejected: {exc}") from exc
        return self.deps.slots.install(
            staging_root, manifest.name, manifest.version, variant.id, selection.engine,
            selection.device,
        )  # fmt: skip

    def _check_memory(self, needed: int, ref: str) -> None:
        if self.deps.memory_available is None or not needed:
            return
        available = self.deps.memory_available()
        if needed > available:
            raise RolloutFailed(
                f"model {ref} needs {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
            )

    def _load(self, slot: Slot) -> LoadedModel:
        return load_slot(slot, self.deps.engine_factory)

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
            return int(data.get("applied_version", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def _record(self, version: int) -> None:
        with self._lock:
            self.applied_version = max(self.applied_version, version)
            payload = json.dumps({"applied_version": self.applied_version}).encode()
            atomic_write_bytes(self._state_path, payload)
        if self.deps.on_change is not None:
            self.deps.on_change()


def _link_or_copy(src: Path, dest: Path) -> None:
    import shutil

    try:
        dest.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dest)


class _Reporter:
    """Emits the events of one desired version, with download progress throttled."""

    def __init__(self, emit: EventSink, version: int, target: DesiredModel) -> None:
        self._emit, self._version, self._target = emit, version, target
        self._last_progress = -PROGRESS_EVERY_BYTES

    def __call__(self, kind: EventKind, detail: str = "", **extra: Any) -> None:
        event = RolloutEvent(
            desired_version=self._version, rollout_id=self._target.rollout_id,
            model=f"{self._target.name}:{self._target.version}", kind=kind, detail=detail, **extra,
        )  # fmt: skip
        self._emit(event)

    def progress(self, done: int, total: int) -> None:
        if done - self._last_progress >= PROGRESS_EVERY_BYTES or done == total:
            self._last_progress = done
            self("downloading", bytes_done=done, bytes_total=total)


@dataclass(frozen=True)
class HealthReport:
    """The smoke generation's numbers and whether they meet the manifest's budget."""

    ok: bool
    reason: str
    first_token_ms: float
    tokens_per_s: float
    tokens: int

    def as_dict(self) -> dict[str, float]:
        """The numbers, for the `active` event."""
        return {
            "first_token_ms": round(self.first_token_ms, 2),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "tokens": float(self.tokens),
        }


def smoke_test(loaded: LoadedModel) -> HealthReport:
    """Generate the manifest's health prompt greedily and hold it to the manifest's budget."""
    budget = loaded.manifest.health if loaded.manifest else HealthBudget()
    params = SamplingParams(max_tokens=budget.max_tokens, temperature=0.0, seed=0)
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        for item in loaded.engine.generate(budget.prompt, params):
            if isinstance(item, Completion):
                tokens = item.completion_tokens
            elif first is None:
                first = time.perf_counter()
    except AgentError as exc:
        return HealthReport(False, f"generation failed: {exc}", 0.0, 0.0, 0)
    ended = time.perf_counter()
    if first is None or tokens == 0:
        return HealthReport(False, "the model produced no tokens", 0.0, 0.0, 0)
    ttft_ms = (first - started) * 1000
    rest = ended - first
    tps = (tokens - 1) / rest if tokens > 1 and rest > 0 else tokens / max(ended - started, 1e-9)
    problems = []
    if ttft_ms > budget.max_first_token_ms:
        problems.append(f"first token after {ttft_ms:.0f} ms > {budget.max_first_token_ms:.0f} ms")
    if tps < budget.min_tokens_per_s:
        problems.append(f"{tps:.1f} tokens/s < {budget.min_tokens_per_s:.1f}")
    return HealthReport(not problems, "; ".join(problems), ttft_ms, tps, tokens)
