"""A model-free engine for testing the code around engines (runtime, server, CLI)."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.engines.base import (
    Completion,
    EngineStats,
    FinishReason,
    LoadOptions,
    SamplingParams,
    TokenChunk,
)
from agent.engines.fake_json import constrained_text
from agent.errors import EngineError, ModelLoadError

if TYPE_CHECKING:
    from agent.model_loading import LoadedModel

# The fake engines' whole vocabulary: token i is WORDS[i].
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
)


@dataclass
class FakeBehaviour:
    """Knobs a test turns: delays, failures and the context size."""

    token_delay_s: float = 0.0
    load_delay_s: float = 0.0
    context_length: int = 2048
    fail_load: bool = False
    fail_after_tokens: int | None = None


class FakeEngine:
    """Deterministic words derived from the prompt; tokens are whitespace-separated words.

    The output for a prompt is the same every time (the seed changes it), so tests can
    assert on text. Stop strings are honoured on the produced text.
    """

    name = "fake"
    constrained_decoding = True  # answers a constraint with JSON that matches it
    EMBEDDING_SIZE = 16

    def __init__(self, behaviour: FakeBehaviour | None = None) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self.loaded_path: Path | None = None
        self.load_count = 0
        self.unload_count = 0
        self.generations = 0
        self._stats = EngineStats()
        self._active = threading.Lock()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Pretend to load: sleep the configured load delay, then remember the path."""
        started = time.perf_counter()
        if self.behaviour.load_delay_s:
            time.sleep(self.behaviour.load_delay_s)
        if self.behaviour.fail_load:
            raise ModelLoadError(f"fake engine refused to load {model_path}")
        self.loaded_path = model_path
        self.load_count += 1
        self._stats = EngineStats(load_seconds=time.perf_counter() - started, device=options.device)

    def count_tokens(self, text: str) -> int:
        """One token per whitespace-separated word, plus one for BOS."""
        return len(text.split()) + 1

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Yield up to max_tokens words chosen from a hash of the prompt (and seed)."""
        if self.loaded_path is None:
            raise EngineError("fake engine: generate called before load")
        if not self._active.acquire(blocking=False):
            raise EngineError("fake engine: two generations ran at once")
        try:
            yield from self._generate(prompt, params, cancel)
        finally:
            self._active.release()

    def _generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None
    ) -> Iterator[TokenChunk | Completion]:
        self.generations += 1
        prompt_tokens = self.count_tokens(prompt)
        seed = sum(prompt.encode()) + (params.seed or 0)
        if params.constraint is not None:
            word = WORDS[seed % len(WORDS)]
            text = constrained_text(params.constraint, word)
            yield from self._replay(text, params, prompt_tokens, cancel)
            return
        text = ""
        produced = 0
        reason: FinishReason = "length"
        started = time.perf_counter_ns()
        while produced < params.max_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            failing_at = self.behaviour.fail_after_tokens
            if failing_at is not None and produced >= failing_at:
                raise EngineError("fake engine: injected failure during generation")
            if self.behaviour.token_delay_s:
                time.sleep(self.behaviour.token_delay_s)
            index = (seed + produced * 7) % len(WORDS)
            piece = (" " if produced else "") + WORDS[index]
            produced += 1
            text += piece
            hit = next((s for s in params.stop if s and s in text), None)
            if hit is not None:
                # Emit only what precedes the stop string, like real engines do.
                cut = text.index(hit)
                remainder = piece[: max(0, len(piece) - (len(text) - cut))]
                if remainder:
                    yield TokenChunk(text=remainder, token_id=index)
                reason = "stop"
                break
            yield TokenChunk(text=piece, token_id=index)
        eval_ns = time.perf_counter_ns() - started
        self._stats.prompt_tokens += prompt_tokens
        self._stats.completion_tokens += produced
        yield Completion(
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=produced,
            prompt_eval_ns=1000 * prompt_tokens,
            eval_ns=eval_ns,
        )

    def _replay(
        self, text: str, params: SamplingParams, prompt_tokens: int, cancel: threading.Event | None
    ) -> Iterator[TokenChunk | Completion]:
        """`text` in 4-character tokens, cut at max_tokens like any other generation."""
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        produced = 0
        reason: FinishReason = "stop"
        for piece in pieces:
            if produced >= params.max_tokens:
                reason = "length"
                break
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            produced += 1
            yield TokenChunk(text=piece, token_id=produced)
        self._stats.prompt_tokens += prompt_tokens
        self._stats.completion_tokens += produced
        yield Completion(reason, prompt_tokens, produced, 1000 * prompt_tokens, 1000 * produced)

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Unit vectors from a hash of each text's words, and the tokens the texts take."""
        if self.loaded_path is None:
            raise EngineError("fake engine: embed called before load")
        vectors = []
        for text in texts:
            vector = [0.0] * self.EMBEDDING_SIZE
            for word in text.lower().split():
                digest = hashlib.sha256(word.encode()).digest()
                vector[digest[0] % self.EMBEDDING_SIZE] += 1.0 + digest[1] / 255
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        return vectors, sum(self.count_tokens(t) for t in texts)

    def unload(self) -> None:
        """Forget the model."""
        self.loaded_path = None
        self.unload_count += 1

    def stats(self) -> EngineStats:
        """Counters since load."""
        return self._stats

    @property
    def context_length(self) -> int:
        """The configured context size."""
        return self.behaviour.context_length


def fake_model(
    path: Path, behaviour: FakeBehaviour | None = None, *, name: str = "fake"
) -> LoadedModel:
    """A LoadedModel over a loaded FakeEngine (ChatML template), for tests of the runtime."""
    from agent.model_loading import LoadedModel

    engine = FakeEngine(behaviour)
    engine.load(path, LoadOptions())
    return LoadedModel(
        name=name,
        path=path,
        variant_id="fake",
        engine_name=engine.name,
        engine=engine,
        load_seconds=engine.stats().load_seconds,
        explanation="the fake engine, for tests",
    )
