"""Running one generation in a worker thread and bridging its tokens to asyncio in batches."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from agent.engines.base import Completion, Engine, SamplingParams, TokenChunk
from agent.engines.batching import BatchRequest, RequestScheduler
from agent.errors import AgentError, EngineError

_LOGGER = logging.getLogger(__name__)


class GenerationObserver(Protocol):
    """Receives timings from the worker thread (metrics, telemetry); must be thread-safe."""

    def on_load(self, seconds: float) -> None:
        """A model finished loading."""

    def on_first_token(self, seconds: float) -> None:
        """Seconds from the request's arrival to its first token."""

    def on_token_gap(self, seconds: float) -> None:
        """Seconds between two consecutive tokens."""

    def on_finish(self, completion: Completion) -> None:
        """A generation ended (any reason)."""

    def on_queued(self, seconds: float) -> None:
        """Seconds a request waited for a slot (batching engines)."""

    def on_request_done(self, seconds: float) -> None:
        """Seconds from a request's arrival to its end (any reason)."""


class FairQueue:
    """First come, first served: one holder at a time, the rest wait in arrival order."""

    def __init__(self) -> None:
        self._busy = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        """Wait for this caller's turn."""
        if not self._busy and not self._waiters:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the turn came as we were cancelled: pass it on
            else:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        """Hand the turn to the next waiter, or mark the queue free."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False


_DONE = object()
# How often, at most, the reader takes a batch while tokens keep coming. One wake-up, one
# write and one client read per batch instead of per token: at 420 tok/s that is ~4 tokens a
# write, and the CPU it saves goes to the model on a small device. Imperceptible to a reader.
STREAM_BATCH_INTERVAL_S = 0.01


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Generation:
    """Tokens of one running generation, read in batches: `async for chunks in generation`.

    The worker thread appends; it wakes the event loop only when the reader is waiting, so a
    batch costs one `call_soon_threadsafe`. While tokens keep coming the reader takes a batch
    at most every `batch_interval_s`; the end of the generation wakes it at once.
    """

    def __init__(
        self,
        model: Any,
        params: SamplingParams,
        prompt_tokens: int,
        started: float | None = None,
        *,
        batch_interval_s: float = STREAM_BATCH_INTERVAL_S,
    ) -> None:
        self.model = model
        self.params = params
        self.prompt_tokens = prompt_tokens
        self.started = started or time.perf_counter()  # when the request arrived
        self.cancel_event = threading.Event()
        self.completion: Completion | None = None
        self.first_token_at: float | None = None
        self.batch_interval_s = batch_interval_s
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: list[object] = []
        self._ended = False  # something other than a token arrived: the reader must not pace
        self._waiter: asyncio.Future[None] | None = None
        self._pacing = False  # the reader waits for its interval: only the end wakes it

    def cancel(self) -> None:
        """Ask the engine to stop (the client went away)."""
        self.cancel_event.set()

    def push(self, item: object) -> None:
        """From the worker thread: queue an item; wake the loop only if the reader waits."""
        token = isinstance(item, TokenChunk)
        with self._lock:
            self._items.append(item)
            self._ended = self._ended or not token
            waiter = self._waiter
            if waiter is None or (self._pacing and token):
                return
            self._waiter = None
        self._loop.call_soon_threadsafe(_wake, waiter)

    async def _take(self, not_before: float) -> list[object]:
        """What arrived, once there is something and `not_before` has passed (or it ended)."""
        loop = self._loop
        delay = not_before - loop.time()
        with self._lock:
            if self._items and (delay <= 0 or self._ended):
                items, self._items = self._items, []
                return items
            waiter = self._waiter = loop.create_future()
            self._pacing = delay > 0
        timer = loop.call_later(delay, _wake, waiter) if delay > 0 else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._waiter = None
                items, self._items = self._items, []
        return items

    async def __aiter__(self) -> AsyncIterator[list[TokenChunk]]:
        """Batches of chunks, as many as arrived since the last read; ends after Completion."""
        not_before = 0.0
        while True:
            items = await self._take(not_before)
            if not items:
                continue  # the interval passed with nothing new: wait for the next token
            if self.batch_interval_s > 0:
                not_before = self._loop.time() + self.batch_interval_s
            chunks: list[TokenChunk] = []
            for item in items:
                if isinstance(item, TokenChunk):
                    chunks.append(item)
                elif isinstance(item, Completion):
                    self.completion = item
                elif isinstance(item, BaseException):
                    if chunks:
                        yield chunks
                    if isinstance(item, AgentError):
                        raise item
                    raise EngineError(f"generation failed: {item}") from item
                elif item is _DONE:
                    if chunks:
                        yield chunks
                    return
            if chunks:
                yield chunks

    async def text(self) -> str:
        """Read the whole generation and return its text."""
        parts: list[str] = []
        async for chunks in self:
            parts.extend(c.text for c in chunks)
        return "".join(parts)


def _finish(generation: Generation, on_done: Callable[[], None], error: Exception | None) -> None:
    try:
        on_done()
    finally:
        if error is not None:
            generation.push(error)
        generation.push(_DONE)


class _Relay:
    """Engine items to a Generation from the engine's thread, timing tokens for the observer."""

    def __init__(self, generation: Generation, observer: GenerationObserver | None) -> None:
        self._generation = generation
        self._observer = observer
        self._last: float | None = None

    def push(self, item: TokenChunk | Completion) -> None:
        generation, observer = self._generation, self._observer
        if isinstance(item, TokenChunk):
            now = time.perf_counter()
            if self._last is None:
                generation.first_token_at = now
                if observer is not None:
                    observer.on_first_token(now - generation.started)
            elif observer is not None:
                observer.on_token_gap(now - self._last)
            self._last = now
        elif observer is not None:
            observer.on_finish(item)
        generation.push(item)


def start_worker(
    engine: Engine,
    prompt: str,
    params: SamplingParams,
    *,
    prompt_tokens: int,
    on_done: Callable[[], None],
    observer: GenerationObserver | None = None,
    model: Any = None,
    started: float | None = None,
    batch_interval_s: float = STREAM_BATCH_INTERVAL_S,
) -> Generation:
    """Start `engine.generate` in a thread and return the Generation that reads it."""
    generation = Generation(
        model, params, prompt_tokens, started, batch_interval_s=batch_interval_s
    )
    relay = _Relay(generation, observer)
    loop = asyncio.get_running_loop()

    def run() -> None:
        error: Exception | None = None
        try:
            for item in engine.generate(prompt, params, generation.cancel_event):
                relay.push(item)
        except Exception as exc:  # reported to the reader, which answers the client
            _LOGGER.exception("generation failed")
            error = exc
        finally:
            # Release the slot before the reader sees the end, so that whatever the client
            # does next (another request, /api/ps) finds the runtime settled.
            loop.call_soon_threadsafe(_finish, generation, on_done, error)

    threading.Thread(target=run, name="generation", daemon=True).start()
    return generation


class _TimedSink(_Relay):
    """The scheduler's per-request callback: the relay, then the end of the request."""

    def __init__(
        self,
        generation: Generation,
        on_done: Callable[[], None],
        observer: GenerationObserver | None,
    ) -> None:
        super().__init__(generation, observer)
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()

    def __call__(self, item: object) -> None:
        if isinstance(item, TokenChunk | Completion):
            self.push(item)
            if isinstance(item, TokenChunk):
                return
        if self._observer is not None:
            self._observer.on_request_done(time.perf_counter() - self._generation.started)
        error = item if isinstance(item, Exception) else None
        self._loop.call_soon_threadsafe(_finish, self._generation, self._on_done, error)


def start_batched(
    scheduler: RequestScheduler,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    on_done: Callable[[], None],
    observer: GenerationObserver | None = None,
    model: Any = None,
    started: float | None = None,
    batch_interval_s: float = STREAM_BATCH_INTERVAL_S,
) -> Generation:
    """Queue the prompt on a batching engine's scheduler and return the Generation that reads it."""
    generation = Generation(
        model, params, len(prompt_ids), started, batch_interval_s=batch_interval_s
    )
    request = BatchRequest(
        prompt_ids,
        params,
        _TimedSink(generation, on_done, observer),
        generation.cancel_event,
        on_admit=observer.on_queued if observer is not None else None,
    )
    scheduler.submit(request)
    return generation
