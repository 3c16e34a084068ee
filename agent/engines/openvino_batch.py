"""OpenVINO continuous batching: openvino-genai's ContinuousBatchingPipeline driven from one thread.

The pipeline schedules and holds the KV itself (paged attention, its own prefix cache) and runs
in a child process (agent/engines/openvino_process.py: its `step()` holds the GIL). We add
requests as token ids, step while any runs, and turn each request's new token ids into chunks
with the same per-sequence text handling as the llama.cpp scheduler (`SequenceText`); a
request that asked for log-probabilities gets genai's figure for each chosen token. A
cancelled request is dropped from the pipeline at the next step.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from agent.engines.base import Completion, EngineStats, FinishReason, TokenChunk, TokenLogprob
from agent.engines.decoding import Detokenizer
from agent.engines.openvino_process import NewTokens, PipelineProcess
from agent.engines.scheduling import BatchRequest, SchedulerStats, deferred_to_step_end
from agent.engines.slot_worker import RunningRequest, SequenceText, SlotWorker
from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)


class _Running(RunningRequest):
    def __init__(self, request: BatchRequest, request_id: int, text: SequenceText) -> None:
        super().__init__(request, text)
        self.request_id = request_id


class OpenVinoBatchDriver(SlotWorker[_Running]):
    """A RequestScheduler over one ContinuousBatchingPipeline (in its process, which it owns)."""

    def __init__(
        self,
        pipe: PipelineProcess,
        *,
        n_slots: int,
        detokenizer: Callable[[], Detokenizer],
        is_end: Callable[[int], bool],
        token_bytes: Callable[[int], bytes],
        stats: EngineStats | None = None,
    ) -> None:
        self._pipe = pipe
        self._detokenizer, self._is_end = detokenizer, is_end
        self._token_bytes = token_bytes
        self._ids = itertools.count()
        self._cache_usage = 0.0  # as of the last step
        super().__init__(n_slots=n_slots, stats=stats, name="openvino-batch")

    def stats(self) -> SchedulerStats:
        """Running and waiting requests and the pipeline's KV cache use."""
        with self._cond:
            usage = self._cache_usage
            running = len(self._running)
            return SchedulerStats(
                slots=self.n_slots,
                running=running,
                waiting=len(self._queue),
                batch_tokens=running,
                batch_sequences=running,
                kv_usage=usage,
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
        request_id = next(self._ids)
        try:
            self._revive()
            self._pipe.add(request_id, request.prompt, request.params)
        except EngineError as exc:
            request.sink(EngineError(f"OpenVINO refused the request: {exc}"))
            return
        text = SequenceText(self._detokenizer(), self._is_end, request.params)
        with self._cond:
            self._running.append(_Running(request, request_id, text))
            self._prompt_tokens += len(request.prompt)

    def _stop(self, running: _Running) -> None:
        self._cancel(running.request_id)

    def _step(self) -> None:
        try:
            result = self._pipe.step()
        except EngineError as exc:
            error = EngineError(f"OpenVINO generation failed: {exc}")
            for running in list(self._running):
                if self._pipe.alive:  # a failed step may leave them in the pipeline
                    self._cancel(running.request_id)
                self._end(running, error=error)
            return  # a dead process is started again for the next request (_revive)
        with self._cond:
            self._steps += 1
            self._cache_usage = result.cache_usage
        with deferred_to_step_end():  # one event-loop wake-up for the step's readers
            for running in list(self._running):
                new = result.requests.get(running.request_id, NewTokens([], [], False))
                self._read(running, new)

    def _read(self, running: _Running, new: NewTokens) -> None:
        reason: FinishReason | None = None
        still_running = new.running
        for index, token in enumerate(new.ids):
            running.first_token_ns = running.first_token_ns or time.perf_counter_ns()
            chunk, reason = running.text.push(token)
            if chunk is not None:
                running.request.sink(self._with_logprob(running, chunk, new, index))
            if reason is not None:
                break
        if reason is None and still_running:
            return
        if reason is None:  # the pipeline finished it (its own max_new_tokens or EOS)
            tail = running.text.tail()
            if tail is not None:
                running.request.sink(tail)
            reason = (
                "length" if running.text.produced >= running.request.params.max_tokens else "stop"
            )
        elif still_running:
            self._cancel(running.request_id)  # our stop string or max_tokens: free its blocks
        self._end(running, reason)

    def _with_logprob(
        self, running: _Running, chunk: TokenChunk, new: NewTokens, index: int
    ) -> TokenChunk:
        """The chunk with its token's log-probability, when the request asked (no alternatives:
        genai gives the chosen token's only)."""
        token = new.ids[index]
        if running.request.params.logprobs is None or self._is_end(token):
            return chunk
        if index >= len(new.logprobs):
            return chunk
        found = TokenLogprob(self._token_bytes(token), new.logprobs[index])
        return replace(chunk, logprob=found)

    def _revive(self) -> None:
        """Start the pipeline's process again if it died (it was killed, or ran out of memory)."""
        if not self._pipe.alive:
            _LOGGER.warning("the OpenVINO process is gone; starting it again")
            self._pipe.restart()

    def _cancel(self, request_id: int) -> None:
        try:
            self._pipe.cancel(request_id)
        except EngineError as exc:  # the process is gone: the next step says so
            _LOGGER.warning("cancelling OpenVINO request %d: %s", request_id, exc)

    def _shutdown(self) -> None:
        super()._shutdown()
        self._pipe.close()
