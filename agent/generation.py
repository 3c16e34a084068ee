"""Running one generation in a worker thread and bridging its tokens to asyncio in batches."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from agent.engines.base import Completion, Engine, SamplingParams, TokenChunk
from agent.engines.scheduling import BatchRequest, RequestScheduler, defer_to_step_end
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


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _wake(waiter)


class Generation:
    """Tokens of one running generation, read in batches: `async for chunks in generation`.

    The worker thread appends; it wakes the event loop only when the reader is waiting, so a
    batch costs one `call_soon_threadsafe`, and a batching scheduler's step wakes all its
    readers on this loop with one (`defer_to_step_end`). While tokens keep coming the reader
    takes a batch at most every `batch_interval_s`; the end of the generation wakes it at once.
    """

    def __init__(
        self,
        model: Any,
        params: SamplingParams,
        prompt_tokens: int,
        started: float | None = None,
        *,
        on_done: Callable[[], None] = lambda: None,
        observer: GenerationObserver | None = None,
        batch_interval_s: float = STREAM_BATCH_INTERVAL_S,
    ) -> None:
        self.model = model
        self.params = params
        self.prompt_tokens = prompt_tokens
        self.started = started or time.perf_counter()  # when the request arrived
        self.observer = observer
        self._on_done = on_done  # releases the slot, on the event loop, before the reader ends
        self._last_token: float | None = None
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
        if token and defer_to_step_end(self._loop, self._wake_later, waiter):
            return  # woken with the step's other readers once it has served them all
        self._loop.call_soon_threadsafe(_wake, waiter)

    def _wake_later(self, waiters: list[asyncio.Future[None]]) -> None:
        """From the worker thread, once its step is done: wake the step's readers together."""
        self._loop.call_soon_threadsafe(_wake_all, waiters)

    def record(self, item: TokenChunk | Completion) -> None:
        """From the worker thread: time an engine item for the observer, then queue it."""
        observer = self.observer
        if isinstance(item, TokenChunk):
            now = time.perf_counter()
            if self._last_token is None:
                self.first_token_at = now
                if observer is not None:
                    observer.on_first_token(now - self.started)
            elif observer is not None:
                observer.on_token_gap(now - self._last_token)
            self._last_token = now
        elif observer is not None:
            observer.on_finish(item)
        self.push(item)

    def end(self, error: Exception | None = None) -> None:
        """From the worker thread: release the slot on the event loop, then end the stream.

        The slot goes first so that whatever the client does next (another request, /api/ps)
        finds the runtime settled.
        """
        self._loop.call_soon_threadsafe(self._finish, error)

    def _finish(self, error: Exception | None) -> None:
        try:
            self._on_done()
        finally:
            if error is not None:
                self.push(error)
            self.push(_DONE)

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


def start_worker(generation: Generation, engine: Engine, prompt: str) -> Generation:
    """Run `engine.generate` for the generation in a thread; the generation, to read."""

    def run() -> None:
        error: Exception | None = None
        try:
            for item in engine.generate(prompt, generation.params, generation.cancel_event):
                generation.record(item)
        except Exception as exc:  # reported to the reader, which answers the client
            _LOGGER.exception("generation failed")
            error = exc
        finally:
            generation.end(error)

    threading.Thread(target=run, name="generation", daemon=True).start()
    return generation


def start_batched(
    generation: Generation, scheduler: RequestScheduler, prompt_ids: list[int]
) -> Generation:
    """Queue the generation's prompt on a batching engine's scheduler; the generation, to read."""
    observer = generation.observer
    request = BatchRequest(
        prompt_ids,
        generation.params,
        functools.partial(_batch_sink, generation),
        generation.cancel_event,
        on_admit=observer.on_queued if observer is not None else None,
    )
    scheduler.submit(request)
    return generation


def _batch_sink(generation: Generation, item: object) -> None:
    """The scheduler's per-request callback: chunks, then a Completion or an error."""
    if isinstance(item, TokenChunk | Completion):
        generation.record(item)
        if isinstance(item, TokenChunk):
            return
    if generation.observer is not None:
        generation.observer.on_request_done(time.perf_counter() - generation.started)
    generation.end(item if isinstance(item, Exception) else None)
