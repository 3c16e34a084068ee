"""A model-free batching engine: the shared scheduler over a fake backend, for tests.

The backend keeps each sequence's KV as a token list and checks every step against it, so a
test sees a scheduler that feeds a wrong position, loses a prefix or mixes sequences fail.
The next token depends only on the sequence's own tokens (and its seed when sampling), so
greedy output is the same alone or in any batch.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.engines.base import (
    Completion,
    EngineStats,
    LoadOptions,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)
from agent.engines.batching import BatchScheduler, SequenceWork
from agent.engines.fake import WORDS
from agent.engines.scheduling import BatchRequest
from agent.errors import EngineError

END = len(WORDS)  # the end-of-sequence token
BOS = END + 1


@dataclass
class FakeBatchBackend:
    """Token lists as KV; a step log for tests to inspect."""

    n_seq: int = 8
    n_batch: int = 64
    n_cells: int = 4096
    step_delay_s: float = 0.0
    end_after: int | None = None  # emit END once a sequence holds this many tokens
    gate: threading.Event | None = None  # when set, every step waits for it
    kv: dict[int, list[int]] = field(default_factory=dict)
    steps: list[list[tuple[int, int, bool]]] = field(default_factory=list)  # (seq, n, sample)
    copies: list[tuple[int, int, int]] = field(default_factory=list)
    # Per sequence, each scored prompt token with the KV position of the row that scored it
    # (its log-probability is made -position/10)
    scored: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    _rngs: dict[int, random.Random | None] = field(default_factory=dict)

    def start(self, seq: int, params: SamplingParams, prompt: Sequence[int]) -> None:
        """Greedy at temperature 0, else a seeded random pick."""
        greedy = params.temperature <= 0
        self._rngs[seq] = None if greedy else random.Random(params.seed)
        self.scored.pop(seq, None)

    def step(self, work: Sequence[SequenceWork]) -> list[int]:
        """Append each item's tokens to its sequence's KV; sample where asked."""
        if self.gate is not None:
            self.gate.wait()
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if sum(len(w.tokens) for w in work) > self.n_batch:
            raise EngineError("fake backend: step larger than n_batch")
        self.steps.append([(w.seq, len(w.tokens), w.sample) for w in work])
        out: list[int] = []
        for item in work:
            kv = self.kv.setdefault(item.seq, [])
            if item.start != len(kv):
                raise EngineError(f"fake: seq {item.seq} fed at {item.start}, holds {len(kv)}")
            for offset, token in enumerate(item.scored):
                self.scored.setdefault(item.seq, []).append((item.start + offset, token))
            kv.extend(item.tokens)
            if item.sample:
                out.append(self._next(item.seq, kv))
        return out

    def _next(self, seq: int, kv: list[int]) -> int:
        if self.end_after is not None and len(kv) >= self.end_after:
            return END
        rng = self._rngs.get(seq)
        if rng is not None:
            return rng.randrange(len(WORDS))
        return (sum(kv) * 31 + len(kv) * 7) % len(WORDS)

    def prompt_logprobs(self, seq: int) -> list[TokenLogprob]:
        """The scored prompt tokens, each at -position/10."""
        return [TokenLogprob(self.piece(t), -at / 10) for at, t in self.scored.get(seq, [])]

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """dst's KV becomes src's first `length` tokens."""
        self.copies.append((src, dst, length))
        self.kv[dst] = list(self.kv.get(src, [])[:length])

    def forget(self, seq: int, keep: int = 0) -> None:
        """Cut the sequence's KV to `keep` tokens."""
        self.kv[seq] = self.kv.get(seq, [])[:keep]

    def finish(self, seq: int) -> None:
        """Drop the sampler."""
        self._rngs.pop(seq, None)

    def piece(self, token: int) -> bytes:
        """` word` for each token."""
        return b"" if token >= END else f" {WORDS[token]}".encode()

    def is_end(self, token: int) -> bool:
        """END ends a sequence."""
        return token == END


def fake_tokens(text: str) -> list[int]:
    """BOS, then one token per word (known words keep their index)."""
    ids = [BOS]
    for word in text.split():
        ids.append(WORDS.index(word) if word in WORDS else sum(word.encode()) % len(WORDS))
    return ids


class FakeBatchingEngine:
    """An Engine whose generations go through a BatchScheduler over FakeBatchBackend."""

    name = "fake-batching"

    def __init__(
        self,
        backend: FakeBatchBackend | None = None,
        *,
        n_slots: int = 4,
        context_length: int = 2048,
        prefix_cache: bool = True,
    ) -> None:
        self.backend = backend or FakeBatchBackend()
        self.n_slots = n_slots
        self.prefix_cache = prefix_cache
        self._context = context_length
        self.scheduler: BatchScheduler | None = None
        self._stats = EngineStats()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Start the scheduler."""
        self.unload()
        self._stats = EngineStats(extra={"parallel": str(self.n_slots)})
        self.scheduler = BatchScheduler(
            self.backend, n_slots=self.n_slots, stats=self._stats, prefix_cache=self.prefix_cache
        )

    def tokenize(self, text: str) -> list[int]:
        """Fake token ids."""
        return fake_tokens(text)

    def count_tokens(self, text: str) -> int:
        """Tokens of the text."""
        return len(fake_tokens(text))

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Through the scheduler, like a real batching engine."""
        if self.scheduler is None:
            raise EngineError("fake batching engine: generate called before load")
        items: list[object] = []
        ready = threading.Condition()

        def sink(item: object) -> None:
            with ready:
                items.append(item)
                ready.notify()

        request = BatchRequest(fake_tokens(prompt), params, sink, cancel or threading.Event())
        self.scheduler.submit(request)
        while True:
            with ready:
                ready.wait_for(lambda: bool(items))
                item = items.pop(0)
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, TokenChunk | Completion)
            yield item
            if isinstance(item, Completion):
                return

    def unload(self) -> None:
        """Stop the scheduler."""
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None

    def stats(self) -> EngineStats:
        """Counters since load."""
        return self._stats

    @property
    def context_length(self) -> int:
        """Context of one slot."""
        return self._context
