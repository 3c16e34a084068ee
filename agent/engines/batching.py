"""Continuous batching: one worker thread advances every running sequence in one model step.

An engine that batches hands the scheduler a `BatchBackend` (one forward pass over tokens of
several sequence ids, per-sequence sampling, per-sequence KV operations). The scheduler owns
the rest, the same for every such engine: admission in arrival order into `n_slots` slots,
prompts fed in chunks next to the others' decode tokens, stop strings and detokenizing per
sequence, cancellation that frees the slot at the next step, and the prefix cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from agent.engines.base import (
    EngineStats,
    PromptLogprobs,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)
from agent.engines.decoding import IncrementalDetokenizer
from agent.engines.prefix_cache import PrefixCache
from agent.engines.scheduling import BatchRequest, SchedulerStats, deferred_to_step_end
from agent.engines.slot_worker import RunningRequest, SequenceText, SlotWorker
from agent.errors import AgentError, EngineError

_LOGGER = logging.getLogger(__name__)

# Prompt tokens per step while other sequences decode: a bigger chunk starts a long prompt
# sooner but stalls every running stream for the whole step (167 tok/s prompt on 2 cores
# makes 128 tokens about 0.8 s).
PREFILL_CHUNK_WITH_DECODES = 128


class KVCacheFull(EngineError):
    """The backend found no room in its KV cache for this step's tokens."""


@dataclass(frozen=True)
class SequenceWork:
    """Tokens of one sequence for one step; `sample` asks for the next token after them."""

    seq: int
    tokens: Sequence[int]
    start: int  # KV position of tokens[0]
    sample: bool
    # Prompt tokens to score: scored[i] is the one after tokens[i] (prompt log-probabilities)
    scored: Sequence[int] = ()


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


@runtime_checkable
class PromptLogprobSource(Protocol):
    """A backend that scores the `scored` tokens of SequenceWork, for sequences that asked."""

    def prompt_logprobs(self, seq: int) -> list[TokenLogprob]:
        """The log-probabilities of the sequence's scored prompt tokens so far, in order."""
        ...


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
        self._prompt_scores = backend if isinstance(backend, PromptLogprobSource) else None
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
                # prompt log-probabilities need every prompt token evaluated, none reused
                reuse = request.params.prompt_logprobs is None
                try:
                    seq, reused = self.cache.acquire(request.prompt, self._running_kv(), reuse)
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
                at = len(r.kv)
                scored: list[int] = []
                if r.request.params.prompt_logprobs is not None:
                    scored = r.request.prompt[at + 1 : at + 1 + len(take)]
                work.append(SequenceWork(r.seq, take, at, last, scored))
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

    def _prompt_logprobs(self, running: _Running) -> PromptLogprobs | None:
        request = running.request
        if self._prompt_scores is None or request.params.prompt_logprobs is None:
            return None
        scored = tuple(self._prompt_scores.prompt_logprobs(running.seq))
        return PromptLogprobs(self.backend.piece(request.prompt[0]), scored)

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
