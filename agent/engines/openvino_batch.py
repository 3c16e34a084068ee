"""OpenVINO continuous batching: openvino-genai's ContinuousBatchingPipeline driven from one thread.

The pipeline schedules and holds the KV itself (paged attention, its own prefix cache): we
add requests as token-id tensors, call `step()` while any runs, read each handle's new token
ids and turn them into chunks with the same per-sequence text handling as the llama.cpp
scheduler (`SequenceText`). A cancelled request is dropped from the pipeline at the next step.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.engines.base import Completion, EngineStats, FinishReason, SamplingParams
from agent.engines.batching import BatchRequest, SchedulerStats, SequenceText
from agent.engines.decoding import Detokenizer
from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)
IDLE_WAIT_S = 1.0
KV_CACHE_GB = 1  # SchedulerConfig.cache_size: the paged KV pool, shared by all sequences


def scheduler_config(genai: Any, n_slots: int) -> Any:
    """At most `n_slots` sequences, prefix caching on, prompts split to fit next to decodes."""
    config = genai.SchedulerConfig()
    config.max_num_seqs = n_slots
    config.cache_size = KV_CACHE_GB
    config.enable_prefix_caching = True
    config.dynamic_split_fuse = True
    config.max_num_batched_tokens = 256
    return config


@dataclass
class _Running:
    request: BatchRequest
    handle: Any
    text: SequenceText
    admitted_ns: int
    first_token_ns: int = 0


class OpenVinoBatchDriver:
    """A RequestScheduler over one ContinuousBatchingPipeline."""

    def __init__(
        self,
        pipe: Any,
        *,
        n_slots: int,
        tensor: Callable[[list[int]], Any],
        config: Callable[[SamplingParams], Any],
        detokenizer: Callable[[], Detokenizer],
        is_end: Callable[[int], bool],
        stats: EngineStats | None = None,
    ) -> None:
        self._pipe = pipe
        self.n_slots = n_slots
        self._tensor, self._config = tensor, config
        self._detokenizer, self._is_end = detokenizer, is_end
        self._engine_stats = stats
        self._ids = itertools.count()
        self._queue: collections.deque[BatchRequest] = collections.deque()
        self._running: list[_Running] = []
        self._cond = threading.Condition()
        self._closed = False
        self._steps = self._prompt_tokens = 0
        self._thread = threading.Thread(target=self._run, name="openvino-batch", daemon=True)
        self._thread.start()

    def submit(self, request: BatchRequest) -> None:
        """Queue a request; it joins the pipeline when a slot is free."""
        with self._cond:
            if self._closed:
                raise EngineError("the engine is unloaded; retry once the model is loaded")
            self._queue.append(request)
            self._cond.notify()

    def stats(self) -> SchedulerStats:
        """Running and waiting requests and the pipeline's KV cache use."""
        try:
            usage = float(self._pipe.get_metrics().cache_usage) / 100.0
        except (AttributeError, RuntimeError):
            usage = 0.0
        with self._cond:
            running = len(self._running)
            return SchedulerStats(
                slots=self.n_slots,
                running=running,
                waiting=len(self._queue),
                batch_tokens=running,
                batch_sequences=running,
                kv_usage=min(1.0, max(0.0, usage)),
                prompt_tokens=self._prompt_tokens,
                prefix_hit_tokens=0,
                cached_prefixes=0,
                steps=self._steps,
            )

    def close(self) -> None:
        """Stop the worker; queued and running requests end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._queue and not self._running:
                    self._cond.wait(IDLE_WAIT_S)
                if self._closed:
                    break
                admitted: list[BatchRequest] = []
                while self._queue and len(self._running) + len(admitted) < self.n_slots:
                    admitted.append(self._queue.popleft())
            for request in admitted:
                self._admit(request)
            self._drop_cancelled()
            if self._running:
                self._step()
        error = EngineError("the model was unloaded during generation; retry the request")
        for running in list(self._running):
            self._end(running, error=error)
        with self._cond:
            queued, self._queue = list(self._queue), collections.deque()
        for request in queued:
            request.sink(error)

    def _admit(self, request: BatchRequest) -> None:
        if request.cancel.is_set():
            request.sink(Completion("cancelled", len(request.prompt), 0))
            return
        if request.on_admit is not None:
            request.on_admit(time.perf_counter() - request.submitted)
        try:
            handle = self._pipe.add_request(
                next(self._ids), self._tensor(request.prompt), self._config(request.params)
            )
        except RuntimeError as exc:
            request.sink(EngineError(f"OpenVINO refused the request: {exc}"))
            return
        text = SequenceText(self._detokenizer(), self._is_end, request.params)
        with self._cond:
            self._running.append(_Running(request, handle, text, time.perf_counter_ns()))
            self._prompt_tokens += len(request.prompt)

    def _drop_cancelled(self) -> None:
        for running in [r for r in self._running if r.request.cancel.is_set()]:
            _cancel(running.handle)
            tail = running.text.tail()
            if tail is not None:
                running.request.sink(tail)
            self._end(running, "cancelled")

    def _step(self) -> None:
        try:
            self._pipe.step()
        except RuntimeError as exc:
            error = EngineError(f"OpenVINO generation failed: {exc}")
            for running in list(self._running):
                self._end(running, error=error)
            return
        with self._cond:
            self._steps += 1
        for running in list(self._running):
            self._read(running)

    def _read(self, running: _Running) -> None:
        handle = running.handle
        reason: FinishReason | None = None
        if handle.can_read():
            for output in handle.read().values():
                for token in output.generated_ids:
                    running.first_token_ns = running.first_token_ns or time.perf_counter_ns()
                    chunk, reason = running.text.push(int(token))
                    if chunk is not None:
                        running.request.sink(chunk)
                    if reason is not None:
                        break
        if reason is None and str(handle.get_status()).endswith("RUNNING"):
            return
        if reason is None:  # the pipeline finished it (its own max_new_tokens or EOS)
            tail = running.text.tail()
            if tail is not None:
                running.request.sink(tail)
            reason = (
                "length" if running.text.produced >= running.request.params.max_tokens else "stop"
            )
        else:
            _cancel(handle)  # our stop string or max_tokens: free its blocks now
        self._end(running, reason)

    def _end(
        self, running: _Running, reason: FinishReason = "stop", *, error: Exception | None = None
    ) -> None:
        with self._cond:
            if running not in self._running:
                return
            self._running.remove(running)
        request = running.request
        if error is not None:
            request.sink(error)
            return
        now = time.perf_counter_ns()
        first = running.first_token_ns or now
        if self._engine_stats is not None:
            self._engine_stats.prompt_tokens += len(request.prompt)
            self._engine_stats.completion_tokens += running.text.produced
        request.sink(
            Completion(
                reason,
                len(request.prompt),
                running.text.produced,
                prompt_eval_ns=first - running.admitted_ns,
                eval_ns=now - first,
            )
        )


def _cancel(handle: Any) -> None:
    try:
        handle.cancel()
    except RuntimeError as exc:  # already finished
        _LOGGER.debug("cancelling a generation handle: %s", exc)
