"""The worker thread shared by the batching schedulers: a FIFO queue into a fixed number of slots.

`SlotWorker` owns the queue, cancellation, shutdown and the Completion each request ends with;
`SequenceText` the detokenizing, stop strings and max_tokens of one sequence. Subclasses
(agent/engines/batching.py, agent/engines/openvino_batch.py) admit requests and step the model.
"""

from __future__ import annotations

import collections
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from agent.engines.base import (
    Completion,
    EngineStats,
    FinishReason,
    PromptLogprobs,
    SamplingParams,
    TokenChunk,
)
from agent.engines.decoding import Detokenizer, StopMatcher
from agent.engines.scheduling import BatchRequest
from agent.errors import EngineError

IDLE_WAIT_S = 1.0  # the worker re-checks cancellations at least this often while idle


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

    def _prompt_logprobs(self, running: R) -> PromptLogprobs | None:
        """The prompt's log-probabilities, when the request asked and the backend has them."""
        return None

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
        prompt_logprobs = self._prompt_logprobs(running) if error is None else None
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
                prompt_logprobs=prompt_logprobs,
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
