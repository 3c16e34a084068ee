"""The active model: loading it, swapping it atomically, idle unload, and fair generation."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.chat import CHATML_TEMPLATE
from agent.engines.base import Engine, LoadOptions, SamplingParams
from agent.errors import AgentError, ContextOverflow, ModelLoadError
from agent.generation import FairQueue, Generation, GenerationObserver, start_worker
from models.manifest import MANIFEST_FILE, Manifest

_LOGGER = logging.getLogger(__name__)

EngineFactory = Callable[[str], Engine]
FOREVER = math.inf
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Readiness(str, enum.Enum):
    """Whether the runtime can answer a generation now."""

    EMPTY = "empty"  # no model configured
    LOADING = "loading"
    READY = "ready"
    IDLE = "idle"  # unloaded by keep_alive; the next request reloads it


class QueueFull(AgentError):
    """Too many requests are waiting; the client should retry later."""

    def __init__(self, depth: int, retry_after_s: int = 1) -> None:
        super().__init__(f"the agent is busy: {depth} requests are already waiting; retry shortly")
        self.retry_after_s = retry_after_s


class NoModel(AgentError):
    """No model is configured on this agent."""


def parse_keep_alive(value: str | float | None) -> float:
    """Seconds to keep a model loaded: Ollama's '5m', '1h30m', 300, 0 (now) or -1 (forever)."""
    if value is None:
        raise ValueError("keep_alive is missing")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"keep_alive {value!r} is not a duration; use e.g. '5m', '1h', '30s', 0 or -1"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return FOREVER if seconds < 0 else seconds


@dataclass
class LoadedModel:
    """A model whose engine has loaded one variant."""

    name: str
    path: Path
    variant_id: str
    engine_name: str
    engine: Engine
    manifest: Manifest | None = None
    device: str = "CPU"
    load_seconds: float = 0.0
    selection: Any = None
    explanation: str = ""
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    queue: FairQueue = field(default_factory=FairQueue)

    @property
    def ref(self) -> str:
        """`name:version` for a manifest model, the file stem for a bare .gguf."""
        return self.manifest.ref if self.manifest else self.name

    @property
    def aliases(self) -> set[str]:
        """Every name a client may use for this model."""
        return {self.name, self.ref, f"{self.name}:latest"}

    @property
    def chat_template(self) -> str:
        """The manifest's template, or ChatML for a bare .gguf."""
        return self.manifest.chat_template if self.manifest else CHATML_TEMPLATE

    @property
    def bos_token(self) -> str | None:
        """The BOS token text, when the manifest names one."""
        return self.manifest.tokenizer.bos_token if self.manifest else None

    @property
    def eos_token(self) -> str | None:
        """The EOS token text, when the manifest names one."""
        return self.manifest.tokenizer.eos_token if self.manifest else "<|im_end|>"


def _default_factory(name: str) -> Engine:
    from agent.engines.registry import create_engine

    return create_engine(name)


def open_model(
    path: Path,
    *,
    profile: dict[str, Any],
    installed: dict[str, str],
    prefer: str | None = None,
    options: LoadOptions | None = None,
    engine_factory: EngineFactory | None = None,
) -> LoadedModel:
    """Load a model directory (manifest -> selected variant) or a bare .gguf. Blocking."""
    factory = engine_factory or _default_factory
    base = options or LoadOptions()
    path = path.expanduser()
    started = time.perf_counter()
    if path.is_file() and path.suffix == ".gguf":
        engine = factory(prefer or "llamacpp")
        engine.load(path, base)
        return LoadedModel(
            name=path.stem.lower(),
            path=path,
            variant_id="gguf",
            engine_name=engine.name,
            engine=engine,
            device=base.device,
            load_seconds=time.perf_counter() - started,
            explanation=f"{path.name} is a bare .gguf file: {engine.name} with the ChatML template",
        )
    if not (path / MANIFEST_FILE).is_file():
        raise ModelLoadError(
            f"{path} is neither a model directory with {MANIFEST_FILE} nor a .gguf file; "
            "pass a directory from `edgefleet-agent models list` or a .gguf path"
        )
    from agent.selection import explain, select_variant, variant_path

    manifest = Manifest.load(path)
    selection = select_variant(manifest, profile, installed, prefer=prefer)
    variant = manifest.variant(selection.variant_id)
    engine = factory(selection.engine)
    opts = replace(base, context_length=manifest.context_length, device=selection.device)
    engine.load(variant_path(path, variant), opts)
    return LoadedModel(
        name=manifest.name,
        path=path,
        variant_id=variant.id,
        engine_name=selection.engine,
        engine=engine,
        manifest=manifest,
        device=selection.device,
        load_seconds=time.perf_counter() - started,
        selection=selection,
        explanation=explain(selection),
    )


class ModelRuntime:
    """Holds the active model, swaps it atomically and runs generations one at a time per engine.

    Thread-safe for activate/unload; generations are started from an asyncio event loop.
    """

    def __init__(
        self,
        *,
        max_waiting: int = 16,
        keep_alive: float = FOREVER,
        observer: GenerationObserver | None = None,
    ) -> None:
        self.max_waiting = max_waiting
        self.default_keep_alive = keep_alive
        self.observer = observer
        self._lock = threading.Lock()
        self._load_lock = threading.RLock()  # one load at a time; reload nests load_with
        self._active: LoadedModel | None = None
        self.known: LoadedModel | None = None  # the last model activated, loaded or not
        self._loader: Callable[[], LoadedModel] | None = None
        self._loading = False
        self.load_error: str | None = None
        self._waiting = 0
        self._running = 0
        self._expiry: threading.Timer | None = None
        self.expires_at: float | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def active(self) -> LoadedModel | None:
        """The model requests go to now (None when unloaded or empty)."""
        return self._active

    @property
    def readiness(self) -> Readiness:
        """empty / loading / ready / idle."""
        if self._loading:
            return Readiness.LOADING
        if self._active is not None:
            return Readiness.READY
        return Readiness.IDLE if self._loader is not None else Readiness.EMPTY

    @property
    def waiting(self) -> int:
        """Requests admitted and not yet generating."""
        return self._waiting

    @property
    def running(self) -> int:
        """Generations running now."""
        return self._running

    # -- loading and swapping ----------------------------------------------------------------
    async def load_model(
        self,
        path: Path,
        *,
        profile: dict[str, Any] | None = None,
        installed: dict[str, str] | None = None,
        prefer: str | None = None,
        options: LoadOptions | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> LoadedModel:
        """Load `path` off the event loop, activate it, and remember it for idle reloads."""

        def load() -> LoadedModel:
            return open_model(
                path,
                profile=profile if profile is not None else _probe(),
                installed=installed if installed is not None else _installed(),
                prefer=prefer,
                options=options,
                engine_factory=engine_factory,
            )

        return await asyncio.to_thread(self.load_with, load)

    def load_with(self, loader: Callable[[], LoadedModel]) -> LoadedModel:
        """Run `loader` (blocking), activate its model and keep `loader` for reloads."""
        with self._load_lock:
            self._loading = True
            try:
                loaded = loader()
            except Exception as exc:
                self.load_error = str(exc)
                raise
            finally:
                self._loading = False
            self.load_error = None
            self._loader = loader
            self.activate(loaded)
        return loaded

    def activate(self, loaded: LoadedModel) -> LoadedModel | None:
        """Make `loaded` the active model; the old one unloads once its requests finish."""
        with self._lock:
            old, self._active = self._active, loaded
            self.known = loaded
            self._cancel_expiry()
        if self.observer is not None:
            self.observer.on_load(loaded.load_seconds)
        _LOGGER.info(
            "active model %s (%s on %s)", loaded.ref, loaded.variant_id, loaded.engine_name
        )
        if old is not None and old is not loaded:
            self._retire(old)
        return old

    def unload(self) -> None:
        """Unload the active model now (keep_alive 0); the next request reloads it."""
        with self._lock:
            old, self._active = self._active, None
            self._cancel_expiry()
        if old is not None:
            self._retire(old)

    def _retire(self, model: LoadedModel) -> None:
        with self._lock:
            busy = model.in_flight > 0
        if not busy:
            threading.Thread(target=_unload_quietly, args=(model,), daemon=True).start()

    def _ensure_loaded(self) -> LoadedModel:
        with self._load_lock:
            current = self._active
            if current is not None:
                return current
            if self._loader is None:
                raise NoModel("no model is loaded; start the agent with --model PATH")
            _LOGGER.info("reloading the model after idle unload")
            return self.load_with(self._loader)

    # -- keep_alive --------------------------------------------------------------------------
    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.expires_at = None

    def _arm_expiry(self, model: LoadedModel, keep_alive: float) -> None:
        # Called with self._lock held, when the model's last request finished.
        self._cancel_expiry()
        if keep_alive == FOREVER:
            return
        if keep_alive <= 0:
            self._active = None
            threading.Thread(target=_unload_quietly, args=(model,), daemon=True).start()
            return
        self.expires_at = time.time() + keep_alive
        timer = threading.Timer(keep_alive, self._expire, args=(model,))
        timer.daemon = True
        self._expiry = timer
        timer.start()

    def _expire(self, model: LoadedModel) -> None:
        with self._lock:
            if self._active is not model or model.in_flight > 0:
                return
            self._active = None
            self._expiry = None
            self.expires_at = None
        _LOGGER.info("keep_alive expired: unloading %s", model.ref)
        _unload_quietly(model)

    # -- generation --------------------------------------------------------------------------
    async def lease(self, model: LoadedModel | None = None) -> LoadedModel:
        """The model to use (reloading after idle unload), counted as in flight until release."""
        while True:
            with self._lock:
                target = model or self._active
                if target is not None:
                    target.in_flight += 1
                    if target is self._active:
                        self._cancel_expiry()
                    return target
            await asyncio.to_thread(self._ensure_loaded)

    def release(self, model: LoadedModel, keep_alive: float | None = None) -> None:
        """End a lease: unload a retired model when idle, or arm the keep_alive timer."""
        with self._lock:
            model.in_flight -= 1
            if model.in_flight > 0:
                return
            retired = model is not self._active
            if not retired:
                self._arm_expiry(
                    model, self.default_keep_alive if keep_alive is None else keep_alive
                )
        if retired:
            threading.Thread(target=_unload_quietly, args=(model,), daemon=True).start()

    async def generate(
        self,
        build_prompt: Callable[[LoadedModel], tuple[str, SamplingParams]],
        *,
        keep_alive: float | None = None,
        model: LoadedModel | None = None,
        max_tokens_default: Callable[[int, int], int] | None = None,
        started: float | None = None,
    ) -> Generation:
        """Queue fairly, then start generating; raises QueueFull, ContextOverflow, NoModel."""
        if self._waiting >= self.max_waiting:
            raise QueueFull(self._waiting)
        self._waiting += 1
        leased: LoadedModel | None = None
        admitted = False
        try:
            leased = await self.lease(model)
            await leased.queue.acquire()
            admitted = True
            prompt, params = build_prompt(leased)
            prompt_tokens = await asyncio.to_thread(leased.engine.count_tokens, prompt)
            context = leased.engine.context_length
            if max_tokens_default is not None:
                params = replace(params, max_tokens=max_tokens_default(prompt_tokens, context))
            if prompt_tokens + params.max_tokens > context:
                raise ContextOverflow(prompt_tokens, params.max_tokens, context)
        except BaseException:
            self._waiting -= 1
            if leased is not None:
                if admitted:
                    leased.queue.release()
                self.release(leased, keep_alive)
            raise
        self._waiting -= 1
        self._running += 1

        def finished() -> None:
            self._running -= 1
            leased.queue.release()
            self.release(leased, keep_alive)

        return start_worker(
            leased.engine,
            prompt,
            params,
            prompt_tokens=prompt_tokens,
            on_done=finished,
            observer=self.observer,
            model=leased,
            started=started,
        )


def _unload_quietly(model: LoadedModel) -> None:
    try:
        model.engine.unload()
    except Exception:  # an engine that fails to unload must not take the agent down
        _LOGGER.exception("unloading %s failed", model.ref)


def _probe() -> dict[str, Any]:
    from hwprobe.probe import probe

    profile: dict[str, Any] = probe().model_dump(mode="json")
    return profile


def _installed() -> dict[str, str]:
    from agent.engines.registry import installed_engines

    return installed_engines()
