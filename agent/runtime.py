"""The active model: swapping it atomically, idle unload and reload, and fair generation."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agent.engines.base import LoadOptions, SamplingParams
from agent.engines.scheduling import BatchingEngine, SchedulerStats, scheduler_of
from agent.errors import AgentError, ContextOverflow
from agent.generation import (
    STREAM_BATCH_INTERVAL_S,
    Generation,
    GenerationObserver,
    start_batched,
    start_worker,
)
from agent.keepalive import FOREVER, ExpiryTimer
from agent.model_loading import (
    EngineFactory,
    LoadedModel,
    installed_engines,
    open_model,
    probe_profile,
)
from hwprobe.profile import HardwareProfile

_LOGGER = logging.getLogger(__name__)


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
        batch_interval_s: float = STREAM_BATCH_INTERVAL_S,
    ) -> None:
        self.max_waiting = max_waiting
        self.batch_interval_s = batch_interval_s
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
        self._expiry = ExpiryTimer()

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
    def expires_at(self) -> float | None:
        """When keep_alive unloads the idle model (time.time() seconds); None if it will not."""
        return self._expiry.expires_at

    @property
    def waiting(self) -> int:
        """Requests admitted and not yet generating (a batching engine's queue included)."""
        batch = self.batch_stats()
        return self._waiting + (batch.waiting if batch is not None else 0)

    @property
    def running(self) -> int:
        """Generations running now."""
        batch = self.batch_stats()
        return self._running + (batch.running if batch is not None else 0)

    def batch_stats(self) -> SchedulerStats | None:
        """The active model's batch scheduler figures; None for one-at-a-time engines."""
        active = self._active
        scheduler = scheduler_of(active.engine) if active is not None else None
        return scheduler.stats() if scheduler is not None else None

    # -- loading and swapping ----------------------------------------------------------------
    async def load_model(
        self,
        path: Path,
        *,
        profile: HardwareProfile | None = None,
        installed: dict[str, str] | None = None,
        prefer: str | None = None,
        options: LoadOptions | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> LoadedModel:
        """Load `path` off the event loop, activate it, and remember it for idle reloads."""

        def load() -> LoadedModel:
            return open_model(
                path,
                profile=profile if profile is not None else probe_profile(),
                installed=installed if installed is not None else installed_engines(),
                prefer=prefer,
                options=options,
                engine_factory=engine_factory,
            )

        return await asyncio.to_thread(self.load_with, load)

    async def replace_model(self, path: Path) -> LoadedModel:
        """Load `path` in place of the served model, at the context length it was given."""
        known = self.known
        context = known.engine.context_length if known is not None else 0
        return await self.load_model(
            path, options=LoadOptions(context_length=context) if context else None
        )

    def load_with(self, loader: Callable[[], LoadedModel]) -> LoadedModel:
        """Run `loader` (blocking), activate its model and keep `loader` for reloads."""
        with self._load_lock:
            self._loading = True
            try:
                loaded = loader()
            except Exception as exc:
                self.load_error = str(exc) or type(exc).__name__
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
            self._expiry.cancel()
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
            self._expiry.cancel()
        if old is not None:
            self._retire(old)

    def clear(self) -> None:
        """Unload the active model and forget it: nothing is served until the next load."""
        with self._load_lock, self._lock:
            old, self._active = self._active, None
            self._loader, self.known, self.load_error = None, None, None
            self._expiry.cancel()
        if old is not None:
            self._retire(old)

    def _retire(self, model: LoadedModel) -> None:
        with self._lock:
            busy = model.in_flight > 0
        if not busy:
            _unload_in_background(model)

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
    def _arm_expiry(self, model: LoadedModel, keep_alive: float) -> None:
        # Called with self._lock held, when the model's last request finished.
        self._expiry.cancel()
        if keep_alive == FOREVER:
            return
        if keep_alive <= 0:
            self._active = None
            _unload_in_background(model)
            return
        self._expiry.arm(keep_alive, functools.partial(self._expire, model))

    def _expire(self, model: LoadedModel) -> None:
        with self._lock:
            if self._active is not model or model.in_flight > 0:
                return
            self._active = None
            self._expiry.cancel()
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
                        self._expiry.cancel()
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
            _unload_in_background(model)

    async def generate(
        self,
        build_prompt: Callable[[LoadedModel], tuple[str, SamplingParams]],
        *,
        keep_alive: float | None = None,
        model: LoadedModel | None = None,
        max_tokens_default: Callable[[int, int], int] | None = None,
        started: float | None = None,
    ) -> Generation:
        """Queue fairly, then start generating; raises QueueFull, ContextOverflow, NoModel.

        A batching engine takes the request into its scheduler's queue (arrival order) and
        runs it next to the others; any other engine runs one generation at a time.
        """
        waiting, batch = self.waiting, self.batch_stats()
        free_slots = max(0, batch.slots - batch.running) if batch is not None else 0
        if waiting >= self.max_waiting + free_slots:  # a request bound for a free slot never waits
            raise QueueFull(waiting)
        self._waiting += 1
        leased: LoadedModel | None = None
        admitted = False
        prompt_ids: list[int] | None = None
        try:
            leased = await self.lease(model)
            scheduler = scheduler_of(leased.engine)
            if scheduler is None:
                await leased.queue.acquire()
                admitted = True
            prompt, params = build_prompt(leased)
            engine = leased.engine
            if scheduler is not None and isinstance(engine, BatchingEngine):
                ids = await asyncio.to_thread(engine.tokenize, prompt)
                prompt_ids, prompt_tokens = ids, len(ids)
            else:
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
        lease, batched = leased, scheduler is not None and prompt_ids is not None

        def done() -> None:
            if not batched:  # the engine's one-at-a-time turn
                self._running -= 1
                lease.queue.release()
            self.release(lease, keep_alive)

        generation = Generation(
            leased,
            params,
            prompt_tokens,
            started,
            on_done=done,
            observer=self.observer,
            batch_interval_s=self.batch_interval_s,
        )
        if scheduler is not None and prompt_ids is not None:
            return start_batched(generation, scheduler, prompt_ids)
        self._running += 1
        return start_worker(generation, leased.engine, prompt)


def _unload_in_background(model: LoadedModel) -> None:
    threading.Thread(target=_unload_quietly, args=(model,), daemon=True).start()


def _unload_quietly(model: LoadedModel) -> None:
    try:
        model.engine.unload()
    except Exception:  # an engine that fails to unload must not take the agent down
        _LOGGER.exception("unloading %s failed", model.ref)
