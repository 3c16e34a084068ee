"""OpenVINO continuous batching: openvino-genai's ContinuousBatchingPipeline driven from one thread.

The pipeline schedules and holds the KV itself (paged attention, its own prefix cache): we
add requests as token-id tensors, call `step()` while any runs, read each handle's new token
ids and turn them into chunks with the same per-sequence text handling as the llama.cpp
scheduler (`SequenceText`). A cancelled request is dropped from the pipeline at the next step.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.engines.base import Completion, EngineStats, FinishReason, SamplingParams
from agent.engines.decoding import Detokenizer
from agent.engines.scheduling import BatchRequest, SchedulerStats, deferred_to_step_end
from agent.engines.slot_worker import RunningRequest, SequenceText, SlotWorker
from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)
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


class _Running(RunningRequest):
    def __init__(self, request: BatchRequest, handle: Any, text: SequenceText) -> None:
        super().__init__(request, text)
        self.handle = handle


class OpenVinoBatchDriver(SlotWorker[_Running]):
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
        self._tensor, self._config = tensor, config
        self._detokenizer, self._is_end = detokenizer, is_end
        self._ids = itertools.count()
        super().__init__(n_slots=n_slots, stats=stats, name="openvino-batch")

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

    def _admit(self, requests: list[BatchRequest]) -> None:
        for request in requests:
            self._add(request)

    def _add(self, request: BatchRequest) -> None:
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
            self._running.append(_Running(request, handle, text))
            self._prompt_tokens += len(request.prompt)

    def _stop(self, running: _Running) -> None:
        _cancel(running.handle)

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
        with deferred_to_step_end():  # one event-loop wake-up for the step's readers
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


def _cancel(handle: Any) -> None:
    try:
        handle.cancel()
    except RuntimeError as exc:  # already finished
        _LOGGER.debug("cancelling a generation handle: %s", exc)
