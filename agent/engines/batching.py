"""Continuous batching: one worker thread advances every running sequence in one model step.

An engine that batches hands the scheduler a `BatchBackend` (one forward pass over tokens of
several sequence ids, per-sequence sampling, per-sequence KV operations). The scheduler owns
the rest, the same for every such engine: admission in arrival order into `n_slots` slots,
prompts fed in chunks next to the others' decode tokens, stop strings and detokenizing per
sequence, cancellation that frees the slot at the next step, and the prefix cache.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from agent.engines.base import (
    Completion,
    EngineStats,
    FinishReason,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)
from agent.engines.decoding import Detokenizer, IncrementalDetokenizer, StopMatcher
from agent.engines.prefix_cache import PrefixCache
from agent.errors import AgentError, EngineError

_LOGGER = logging.getLogger(__name__)

# Prompt tokens per step while other sequences decode: a bigger chunk starts a long prompt
# sooner but stalls every running stream for the whole step (167 tok/s prompt on 2 cores
# makes 128 tokens about 0.8 s).
PREFILL_CHUNK_WITH_DECODES = 128
IDLE_WAIT_S = 1.0  # the worker re-checks cancellations at least this often while idle

Sink = Callable[[object], None]

# Per worker thread: while a step hands its tokens to the sinks, the calls they deferred.
_deferring = threading.local()
_Deferred = dict[Hashable, tuple[Callable[[list[Any]], object], list[Any]]]


def defer_to_step_end(key: Hashable, call: Callable[[list[Any]], object], arg: object) -> bool:
    """Inside a step's hand-out on this thread: queue `arg` for one `call(args)` per `key` once
    the step has served every sequence; False elsewhere (the caller acts at once).

    A sink that wakes a reader on an event loop defers the wake-up: a step of eight sequences
    then costs the loop one wake-up (one self-pipe write from this thread, one handover of the
    GIL) instead of eight, and every reader's tokens of the step are there when it runs.
    """
    pending: _Deferred | None = getattr(_deferring, "pending", None)
    if pending is None:
        return False
    entry = pending.get(key)
    if entry is None:
        pending[key] = (call, [arg])
    else:
        entry[1].append(arg)
    return True


@contextlib.contextmanager
def deferred_to_step_end() -> Iterator[None]:
    """Scope of one step's hand-out: the calls deferred inside it are made when it ends."""
    pending: _Deferred = {}
    _deferring.pending = pending
    try:
        yield
    finally:
        _deferring.pending = None
        for call, args in pending.values():
            try:
                call(args)
            except Exception:  # one closed event loop must not starve the others
                _LOGGER.exception("a deferred call after a batched step failed")


class KVCacheFull(EngineError):
    """The backend found no room in its KV cache for this step's tokens."""


@dataclass(frozen=True)
class SequenceWork:
    """Tokens of one sequence for one step; `sample` asks for the next token after them."""

    seq: int
    tokens: Sequence[int]
    start: int  # KV position of tokens[0]
    sample: bool


class BatchBackend(Protocol):
    """One model context that evaluates tokens of many sequence ids in one step."""

    n_seq: int  # sequence ids 0..n_seq-1, a KV stream each (running or a cached prefix)
    n_batch: int  # most tokens one step takes
    n_cells: int  # KV cells of the context, all sequences together

    def start(self, seq: int, params: SamplingParams, prompt: Sequence[int]) -> None:
        """Prepare sampling for a new sequence (its repeat window sees the prompt)."""
        ...

    def step(self, work: Sequence[SequenceWork]) -> list[int]:
        """Evaluate all tokens in one pass; the sampled tokens, in order of `sample` items."""
        ...

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make `dst`'s KV the first `length` positions of `src`'s (whatever `dst` held)."""
        ...

    def forget(self, seq: int, keep: int = 0) -> None:
        """Drop the KV of `seq` from position `keep` on (all of it by default)."""
        ...

    def finish(self, seq: int) -> None:
        """Free the sampling state of a sequence that stopped generating."""
        ...

    def piece(self, token: int) -> bytes:
        """The bytes of one token."""
        ...

    def is_end(self, token: int) -> bool:
        """Whether the token ends generation (EOS, end of turn)."""
        ...


@runtime_checkable
class LogprobSource(Protocol):
    """A backend that computes, when a sequence asked, the log-probabilities of its last sample."""

    def token_logprob(self, seq: int) -> TokenLogprob | None:
        """The last sampled token's log-probabilities (None unless the sequence asked)."""
        ...


class RequestScheduler(Protocol):
    """Runs many requests together: BatchScheduler, or an engine's own (OpenVINO's CB)."""

    def submit(self, request: BatchRequest) -> None:
        """Queue a request; its sink gets chunks, then a Completion or an error."""
        ...

    def stats(self) -> SchedulerStats:
        """Gauges and counters for /metrics and telemetry."""
        ...

    def close(self) -> None:
        """Stop; queued and running requests end with an error."""
        ...


@runtime_checkable
class BatchingEngine(Protocol):
    """An engine whose generations go through a RequestScheduler (None until loaded)."""

    scheduler: RequestScheduler | None

    def tokenize(self, text: str) -> list[int]:
        """The prompt's token ids, as the scheduler takes them."""
        ...


def scheduler_of(engine: object) -> RequestScheduler | None:
    """The engine's scheduler when it batches and is loaded, else None."""
    return engine.scheduler if isinstance(engine, BatchingEngine) else None


@dataclass
class BatchRequest:
    """One generation handed to the scheduler; `sink` gets chunks, a Completion or an error."""

    prompt: list[int]
    params: SamplingParams
    sink: Sink
    cancel: threading.Event = field(default_factory=threading.Event)
    on_admit: Callable[[float], None] | None = None  # seconds spent waiting for a slot
    submitted: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class SchedulerStats:
    """What the scheduler is doing now and has done since start."""

    slots: int
    running: int
    waiting: int
    batch_tokens: int  # tokens in the last step
    batch_sequences: int  # sequences in the last step
    kv_usage: float  # estimated share of KV cells in use, 0..1
    prompt_tokens: int  # prompt tokens of admitted requests
    prefix_hit_tokens: int  # of those, taken from the prefix cache
    cached_prefixes: int
    steps: int


class SequenceText:
    """Detokenizing, stop strings and max_tokens of one sequence (O(new text) per token)."""

    def __init__(
        self, detokenizer: Detokenizer, is_end: Callable[[int], bool], params: SamplingParams
    ) -> None:
        self._detok = detokenizer
        self._stops = StopMatcher(params.stop)
        self._is_end = is_end
        self._max = params.max_tokens
        self.produced = 0

    def push(self, token: int) -> tuple[TokenChunk | None, FinishReason | None]:
        """The chunk for one sampled token and, when it ends the sequence, why."""
        if self._is_end(token):
            rest = self._tail()
            return (TokenChunk(rest, token) if rest else None), "stop"
        self.produced += 1
        text = self._stops.push(self._detok.push(token))
        if self._stops.stopped:
            return TokenChunk(text, token), "stop"
        if self.produced >= self._max:
            return TokenChunk(text + self._tail(), token), "length"
        return TokenChunk(text, token), None

    def tail(self) -> TokenChunk | None:
        """Text still held back, for a sequence ended from outside (cancelled)."""
        rest = self._tail()
        return TokenChunk(rest, -1) if rest else None

    def _tail(self) -> str:
        return self._stops.push(self._detok.flush()) + self._stops.flush()


class RunningRequest:
    """A request in a slot: its text state and timings."""

    def __init__(self, request: BatchRequest, text: SequenceText) -> None:
        self.request = request
        self.text = text
        self.admitted_ns = time.perf_counter_ns()
        self.first_token_ns = 0


R = TypeVar("R", bound=RunningRequest)


class SlotWorker(ABC, Generic[R]):
    """The worker thread of a RequestScheduler: a FIFO queue into `n_slots` running requests.

    Subclasses admit requests and advance the running ones one step at a time; this class
    owns the queue, cancellation, the Completion each request ends with, and shutdown.
    Subclasses set their own fields before calling `__init__`, which starts the thread.
    """

    def __init__(self, *, n_slots: int, stats: EngineStats | None, name: str) -> None:
        self.n_slots = n_slots
        self.engine_stats = stats  # the engine's counters, fed as requests finish
        self._queue: collections.deque[BatchRequest] = collections.deque()
        self._running: list[R] = []
        self._cond = threading.Condition()
        self._closed = False
        self._steps = self._prompt_tokens = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- asyncio / caller side ---------------------------------------------------------------
    def submit(self, request: BatchRequest) -> None:
        """Queue a request; it starts at the next step a slot is free."""
        with self._cond:
            if self._closed:
                raise EngineError("the engine is unloaded; retry once the model is loaded")
            self._queue.append(request)
            self._cond.notify()

    def close(self) -> None:
        """Stop the worker; queued and running requests end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # -- worker thread -----------------------------------------------------------------------
    @abstractmethod
    def _admit(self, requests: list[BatchRequest]) -> None:
        """Start the requests taken from the queue, oldest first, into free slots."""

    @abstractmethod
    def _step(self) -> None:
        """Advance every running request by one model step."""

    def _stop(self, running: R) -> None:
        """Stop a cancelled request's generation before it ends (nothing by default)."""

    def _release(self, running: R, *, ok: bool) -> None:
        """Free what the request held once it ended (nothing by default)."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._queue and not self._running:
                    self._cond.wait(IDLE_WAIT_S)
                if self._closed:
                    break
                dropped = [r for r in self._queue if r.cancel.is_set()]
                for request in dropped:
                    self._queue.remove(request)
                free = min(self.n_slots - len(self._running), len(self._queue))
                taken = [self._queue.popleft() for _ in range(free)]
            for request in dropped:
                request.sink(Completion("cancelled", len(request.prompt), 0))
            self._admit(taken)
            self._drop_cancelled()
            if self._running:
                self._step()
        self._shutdown()

    def _drop_cancelled(self) -> None:
        for running in [r for r in self._running if r.request.cancel.is_set()]:
            self._stop(running)
            tail = running.text.tail()
            if tail is not None:
                running.request.sink(tail)
            self._end(running, "cancelled")

    def _end(
        self,
        running: R,
        reason: FinishReason = "stop",
        *,
        error: BaseException | None = None,
    ) -> None:
        """Free the slot at once, then send the request its Completion (or the error)."""
        with self._cond:
            if running not in self._running:
                return
            self._running.remove(running)
        self._release(running, ok=error is None)
        request = running.request
        if error is not None:
            request.sink(error)
            return
        now = time.perf_counter_ns()
        first = running.first_token_ns or now
        if self.engine_stats is not None:
            self.engine_stats.prompt_tokens += len(request.prompt)
            self.engine_stats.completion_tokens += running.text.produced
        request.sink(
            Completion(
                finish_reason=reason,
                prompt_tokens=len(request.prompt),
                completion_tokens=running.text.produced,
                prompt_eval_ns=first - running.admitted_ns,
                eval_ns=now - first,
            )
        )

    def _shutdown(self) -> None:
        error = EngineError("the model was unloaded during generation; retry the request")
        for running in list(self._running):
            self._end(running, error=error)
        with self._cond:
            queued, self._queue = list(self._queue), collections.deque()
        for request in queued:
            request.sink(error)


class _Running(RunningRequest):
    """A request in a slot: its sequence id, what its KV holds and what is left to feed."""

    def __init__(self, request: BatchRequest, seq: int, reused: int, backend: BatchBackend) -> None:
        detokenizer = IncrementalDetokenizer(backend.piece)
        super().__init__(request, SequenceText(detokenizer, backend.is_end, request.params))
        self.seq = seq
        self.kv: list[int] = request.prompt[:reused]
        self.pending: list[int] = request.prompt[reused:]
        self.reused = reused
        self.next_token = -1  # sampled, not yet in the KV: fed at the next step


class BatchScheduler(SlotWorker[_Running]):
    """Slots, chunked prefill, per-sequence streams and the prefix cache over one backend."""

    def __init__(
        self,
        backend: BatchBackend,
        *,
        n_slots: int,
        prefix_cache: bool = True,
        prefill_chunk: int = PREFILL_CHUNK_WITH_DECODES,
        stats: EngineStats | None = None,
        name: str = "batch-scheduler",
    ) -> None:
        if not 1 <= n_slots <= backend.n_seq:
            raise ValueError(f"n_slots must be 1..{backend.n_seq}, not {n_slots}")
        self.backend = backend
        self._logprobs = backend if isinstance(backend, LogprobSource) else None
        self.prefill_chunk = max(1, prefill_chunk)
        self.cache = PrefixCache(backend, enabled=prefix_cache, cells=backend.n_cells)
        self._last_tokens = self._last_seqs = 0
        super().__init__(n_slots=n_slots, stats=stats, name=name)

    # -- asyncio / caller side ---------------------------------------------------------------
    def stats(self) -> SchedulerStats:
        """A snapshot for /metrics and telemetry."""
        with self._cond:
            return SchedulerStats(
                slots=self.n_slots,
                running=len(self._running),
                waiting=len(self._queue),
                batch_tokens=self._last_tokens,
                batch_sequences=self._last_seqs,
                kv_usage=self.cache.usage(self._running_kv()),
                prompt_tokens=self._prompt_tokens,
                prefix_hit_tokens=self.cache.hit_tokens,
                cached_prefixes=len(self.cache),
                steps=self._steps,
            )

    # -- worker thread -----------------------------------------------------------------------
    def _admit(self, requests: list[BatchRequest]) -> None:
        """A sequence id (a cached prefix when one matches) for each request, then its sampler."""
        admitted: list[_Running] = []
        with self._cond:
            for request in requests:
                try:
                    seq, reused = self.cache.acquire(request.prompt, self._running_kv())
                except AgentError as exc:
                    request.sink(exc)
                    continue
                running = _Running(request, seq, reused, self.backend)
                self._prompt_tokens += len(request.prompt)
                self._running.append(running)
                admitted.append(running)
        for running in admitted:
            self._started(running)

    def _running_kv(self) -> dict[int, list[int]]:
        return {r.seq: r.kv for r in self._running}

    def _started(self, running: _Running) -> None:
        request = running.request
        if request.on_admit is not None:
            request.on_admit(time.perf_counter() - request.submitted)
        try:
            self.backend.start(running.seq, request.params, request.prompt)
        except AgentError as exc:
            self._end(running, error=exc)
            return
        if request.params.max_tokens <= 0:
            self._end(running, "length")

    def _plan(self) -> tuple[list[SequenceWork], list[_Running]]:
        """Decode tokens of every generating sequence, then prompt chunks, oldest first."""
        work: list[SequenceWork] = []
        owners: list[_Running] = []
        decoding = 0
        for r in self._running:
            if not r.pending and r.first_token_ns:
                work.append(SequenceWork(r.seq, [r.next_token], len(r.kv), True))
                owners.append(r)
                decoding += 1
        budget = self.backend.n_batch - decoding
        if decoding:
            budget = min(budget, self.prefill_chunk)
        for r in self._running:
            if budget <= 0:
                break
            if r.pending:
                take = r.pending[:budget]
                last = len(take) == len(r.pending)
                work.append(SequenceWork(r.seq, take, len(r.kv), last))
                owners.append(r)
                budget -= len(take)
        return work, owners

    def _step(self) -> None:
        work, owners = self._plan()
        if not work:
            return
        try:
            tokens = self._decode(work)
        except AgentError as exc:
            _LOGGER.error("batched step failed for %d sequences: %s", len(owners), exc)
            for running in list(self._running):
                self._end(running, error=exc)
            return
        with self._cond:
            self._last_tokens = sum(len(w.tokens) for w in work)
            self._last_seqs = len(work)
            self._steps += 1
        sampled = iter(tokens)
        with deferred_to_step_end():
            for item, running in zip(work, owners, strict=True):
                running.kv.extend(item.tokens)
                if running.pending:  # a prompt chunk, not a decode token
                    del running.pending[: len(item.tokens)]
                if item.sample:
                    self._accept(running, next(sampled))

    def _decode(self, work: list[SequenceWork]) -> list[int]:
        """One backend step; a full KV cache evicts cached prefixes until it fits."""
        while True:
            try:
                return self.backend.step(work)
            except KVCacheFull:
                if not self.cache.evict_oldest():
                    raise

    def _accept(self, running: _Running, token: int) -> None:
        now = time.perf_counter_ns()
        if not running.first_token_ns:
            running.first_token_ns = now
        chunk, reason = running.text.push(token)
        if chunk is not None and running.request.params.logprobs is not None:
            chunk = self._with_logprob(chunk, running.seq, token)
        if chunk is not None:
            running.request.sink(chunk)
        if reason is not None:
            self._end(running, reason)
        else:
            running.next_token = token

    def _with_logprob(self, chunk: TokenChunk, seq: int, token: int) -> TokenChunk:
        """The chunk with its token's log-probabilities (asked for by this sequence only)."""
        if self._logprobs is None or self.backend.is_end(token):
            return chunk
        found = self._logprobs.token_logprob(seq)
        return chunk if found is None else replace(chunk, logprob=found)

    def _release(self, running: _Running, *, ok: bool) -> None:
        """The sampler, and the KV (kept as a cached prefix when useful); the id is then free."""
        seq, kv = running.seq, running.kv
        try:
            self.backend.finish(seq)
        except AgentError:
            _LOGGER.exception("freeing the sampler of sequence %d failed", seq)
        if ok and self.cache.keep(seq, kv):
            return
        try:
            self.backend.forget(seq)
        except AgentError:
            _LOGGER.exception("freeing the KV of sequence %d failed", seq)
