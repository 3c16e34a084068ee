"""How the runtime hands generations to an engine that runs many at once.

A `RequestScheduler` takes `BatchRequest`s and feeds each one's sink its chunks, then a
Completion or an error: `BatchScheduler` over a llama.cpp-style backend (agent/engines/batching.py)
or an engine's own (OpenVINO's continuous batching). `defer_to_step_end` lets the sinks of one
step wake their event loop once instead of once per sequence.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.engines.base import SamplingParams

_LOGGER = logging.getLogger(__name__)

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
