"""llama.cpp's low-level API as a `BatchBackend`: one context, many sequence ids, one decode a step.

The context has one KV stream of `slot_context` cells per slot (`kv_unified` off, as
`llama-server -np N`): a sequence attends over its own cells only, laid out as if it ran alone,
so greedy output is the same alone or in a batch (llama.cpp's CPU kernels compute each token's
row the same whatever else is in the step; a unified cache made every query scan, and sum over,
all sequences' cells, which branched greedy answers at near-ties and cost 27 % of a step at 8
clients). Cached prefixes live in idle streams (`agent.engines.prefix_cache`). Each sequence
samples with its own `llama_sampler` chain in C.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from agent.engines.base import SamplingParams, TokenLogprob
from agent.engines.batching import KVCacheFull, SequenceWork
from agent.engines.decoding import REPEAT_PENALTY_WINDOW
from agent.errors import EngineError, ModelLoadError

_LOGGER = logging.getLogger(__name__)

DEFAULT_N_BATCH = 512  # tokens per decode call, prompt chunks included (llama.cpp's default)


class LlamaBatchBackend:
    """A llama_context with a KV stream a slot, one llama_batch, per-sequence samplers."""

    def __init__(
        self,
        lib: Any,
        model: Any,
        *,
        n_slots: int,
        slot_context: int,
        threads: int | None,
        n_batch: int = DEFAULT_N_BATCH,
        piece: Callable[[int], bytes],
        is_end: Callable[[int], bool],
    ) -> None:
        self._lib = lib
        self.n_seq = n_slots
        self.n_cells = n_slots * slot_context
        self.n_batch = n_batch
        self._piece = piece
        self._is_end = is_end
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_cells
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = self.n_seq
        params.kv_unified = False  # a KV stream per sequence
        params.no_perf = True
        if threads:
            params.n_threads = params.n_threads_batch = threads
        self._ctx = lib.llama_init_from_model(model.model, params)
        if not self._ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context of {self.n_cells} tokens for "
                f"{n_slots} slots; lower --parallel or the context length"
            )
        self._mem = lib.llama_get_memory(self._ctx)
        self._vocab = model.vocab
        self._n_vocab = int(lib.llama_vocab_n_tokens(model.vocab))
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._samplers: dict[int, Any] = {}
        self._logprobs_k: dict[int, int] = {}  # sequences that asked for log-probabilities
        self._logprobs: dict[int, TokenLogprob] = {}
        self._prompt_k: dict[int, int] = {}  # sequences that asked for the prompt's
        self._prompt_found: dict[int, list[TokenLogprob]] = {}
        self.shares_prefixes = not (
            lib.llama_model_n_swa(model.model) > 0
            or lib.llama_model_is_recurrent(model.model)
            or lib.llama_model_is_hybrid(model.model)
        )

    def start(self, seq: int, params: SamplingParams, prompt: Sequence[int]) -> None:
        """A sampler chain for the sequence; its repeat window sees generated tokens only.

        As llama-cpp-python's `Llama.generate` did before batching: the penalty does not push
        the answer away from words the question used.
        """
        del prompt
        self.finish(seq)
        self._samplers[seq] = self._chain(params)
        if params.logprobs is not None:
            self._logprobs_k[seq] = params.logprobs
        if params.prompt_logprobs is not None:
            self._prompt_k[seq] = params.prompt_logprobs
            self._prompt_found[seq] = []

    def _chain(self, params: SamplingParams) -> Any:
        lib = self._lib
        chain_params = lib.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain = lib.llama_sampler_chain_init(chain_params)
        add = lib.llama_sampler_chain_add
        constraint = getattr(params, "constraint", None)
        if constraint is not None:  # a per-sequence grammar masks the logits first
            add(chain, self._grammar(constraint, chain))
        if params.repeat_penalty != 1.0:
            add(
                chain,
                lib.llama_sampler_init_penalties(
                    self._n_vocab, REPEAT_PENALTY_WINDOW, params.repeat_penalty, 0.0, 0.0
                ),
            )
        if params.temperature <= 0.0:
            add(chain, lib.llama_sampler_init_greedy())
            return chain
        if params.top_k > 0:
            add(chain, lib.llama_sampler_init_top_k(params.top_k))
        if 0.0 < params.top_p < 1.0:
            add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, lib.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(31)
        add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _grammar(self, constraint: object, chain: Any) -> Any:
        from agent.engines.llamacpp_grammar import constraint_gbnf

        try:
            gbnf = constraint_gbnf(constraint)
        except Exception:
            self._lib.llama_sampler_free(chain)
            raise
        grammar = self._lib.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not grammar:
            self._lib.llama_sampler_free(chain)
            raise EngineError("llama.cpp rejected the grammar of the requested output format")
        return grammar

    def step(self, work: Sequence[SequenceWork]) -> list[int]:
        """One llama_decode over every sequence's tokens; then each sequence samples its own.

        Tokens go in ascending sequence id: llama.cpp evaluates a run of consecutive ids in one
        pass and starts another pass at every break in the order.
        """
        batch = self._batch
        token, pos, n_seq_id, seq_id, logits = (
            batch.token,
            batch.pos,
            batch.n_seq_id,
            batch.seq_id,
            batch.logits,
        )
        rows: dict[int, int] = {}  # index in `work` -> its output row
        scores: list[tuple[int, int, int]] = []  # (seq, row, prompt token the row scores)
        n = 0
        for index in sorted(range(len(work)), key=lambda i: work[i].seq):
            item = work[index]
            start, seq = item.start, item.seq
            for offset, tok in enumerate(item.tokens):
                token[n] = tok
                pos[n] = start + offset
                n_seq_id[n] = 1
                seq_id[n][0] = seq
                logits[n] = 0
                if offset < len(item.scored):
                    logits[n] = 1
                    scores.append((seq, n, item.scored[offset]))
                n += 1
            if item.sample:
                logits[n - 1] = 1
                rows[index] = n - 1
        if n > self.n_batch:
            raise EngineError(f"a step of {n} tokens exceeds the batch of {self.n_batch}")
        batch.n_tokens = n
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc == 1:
            raise KVCacheFull("llama.cpp found no room in the KV cache for this step")
        if rc != 0:
            raise EngineError(f"llama.cpp decode failed (code {rc})")
        for seq, row, scored in scores:
            self._prompt_found[seq].append(self._token_logprob(row, scored, self._prompt_k[seq]))
        sample = self._lib.llama_sampler_sample
        outputs = [(work[i].seq, rows[i]) for i in range(len(work)) if i in rows]
        tokens = [int(sample(self._samplers[seq], self._ctx, row)) for seq, row in outputs]
        if self._logprobs_k:
            for (seq, row), tok in zip(outputs, tokens, strict=True):
                k = self._logprobs_k.get(seq)
                if k is not None:
                    self._logprobs[seq] = self._token_logprob(row, tok, k)
        return tokens

    def _token_logprob(self, index: int, token: int, k: int) -> TokenLogprob:
        """Log-softmax over the vocabulary of one output row: the token's and the top k."""
        import numpy as np

        row = self._lib.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(row, shape=(self._n_vocab,)).astype(np.float64)
        logits -= logits.max()
        logprobs = logits - np.log(np.exp(logits).sum())
        top: tuple[tuple[bytes, float], ...] = ()
        if k > 0:
            best = np.argpartition(-logprobs, k - 1)[:k]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            top = tuple((self._piece(int(t)), float(logprobs[t])) for t in best)
        return TokenLogprob(self._piece(token), float(logprobs[token]), top)

    def token_logprob(self, seq: int) -> TokenLogprob | None:
        """The log-probabilities of the sequence's last sample, when it asked for them."""
        return self._logprobs.get(seq)

    def prompt_logprobs(self, seq: int) -> list[TokenLogprob]:
        """The log-probabilities of the sequence's prompt tokens scored so far."""
        return list(self._prompt_found.get(seq, ()))

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """`dst`'s stream becomes a copy of `src`'s (its buffers, at the next decode), cut to
        `length` positions: llama.cpp copies between streams only whole."""
        self._lib.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        self.forget(dst, keep=length)

    def forget(self, seq: int, keep: int = 0) -> None:
        """Drop the sequence's KV from position `keep` on."""
        if not self._lib.llama_memory_seq_rm(self._mem, seq, keep if keep > 0 else -1, -1):
            raise EngineError(f"llama.cpp could not drop the KV of sequence {seq}")

    def finish(self, seq: int) -> None:
        """Free the sequence's sampler chain."""
        self._logprobs_k.pop(seq, None)
        self._logprobs.pop(seq, None)
        self._prompt_k.pop(seq, None)
        self._prompt_found.pop(seq, None)
        chain = self._samplers.pop(seq, None)
        if chain is not None:
            self._lib.llama_sampler_free(chain)

    def piece(self, token: int) -> bytes:
        """The bytes of one token."""
        return self._piece(token)

    def is_end(self, token: int) -> bool:
        """Whether the token ends generation."""
        return self._is_end(token)

    def close(self) -> None:
        """Free samplers, the batch and the context (before the model is freed)."""
        for seq in list(self._samplers):
            self.finish(seq)
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
