"""llama.cpp slots on the real SmolLM2: batched greedy output, cancellation, prefix cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.llamacpp import LlamaCppEngine
from tests.agent.samples import BATCH_QUESTIONS, chatml_prompt
from tests.support.streams import collect, run_together

pytest.importorskip("llama_cpp")

GREEDY = SamplingParams(max_tokens=48, temperature=0.0, repeat_penalty=1.0)
OPTIONS = LoadOptions(context_length=512, threads=2, parallel=4)


@pytest.fixture(scope="module")
def engine(smollm2_gguf: Path) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine()
    engine.load(smollm2_gguf, OPTIONS)
    yield engine
    engine.unload()


def _run(engine: LlamaCppEngine, prompt: str) -> tuple[str, Completion]:
    return collect(engine.generate(prompt, GREEDY))


def test_slots_come_from_the_load_options(engine: LlamaCppEngine) -> None:
    extra = engine.stats().extra
    assert (extra["parallel"], extra["slot_context"], extra["prefix_cache"]) == ("4", "512", "on")
    assert engine.context_length == 512


def test_greedy_output_is_the_same_alone_and_batched(
    engine: LlamaCppEngine, smollm2_gguf: Path
) -> None:
    # BATCH_QUESTIONS holds the haiku prompt that branched under one unified KV cache
    prompts = [
        chatml_prompt(q, system=f"You are assistant number {i}.")
        for i, q in enumerate(BATCH_QUESTIONS)
    ]
    batched = run_together(lambda prompt: _run(engine, prompt)[0], prompts, timeout=300)
    alone = [_run(engine, p)[0] for p in prompts]  # these continue from cached prefixes
    assert batched == alone
    assert "Paris" in alone[0]
    fresh = LlamaCppEngine()  # nothing cached: every prompt from scratch
    fresh.load(smollm2_gguf, OPTIONS)
    try:
        assert [_run(fresh, p)[0] for p in prompts] == alone
    finally:
        fresh.unload()


def test_a_cancelled_stream_frees_its_slot(engine: LlamaCppEngine) -> None:
    cancel = threading.Event()
    seen = 0
    for item in engine.generate(chatml_prompt("Tell me a very long story."), GREEDY, cancel):
        if isinstance(item, TokenChunk):
            seen += 1
            cancel.set()
        else:
            assert item.finish_reason == "cancelled" and item.completion_tokens == seen == 1
    stats = engine.batch_stats()
    assert stats is not None and stats.running == 0


def test_a_follow_up_turn_hits_the_prefix_cache(engine: LlamaCppEngine) -> None:
    first = chatml_prompt(
        "What is the capital of France?", system="You answer in one short sentence."
    )
    reply, done = _run(engine, first)
    stats = engine.batch_stats()
    assert stats is not None
    before = stats.prefix_hit_tokens
    follow_up = (
        f"{first}{reply}<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    _run(engine, follow_up)
    after = engine.batch_stats()
    assert after is not None
    assert after.prefix_hit_tokens - before >= done.prompt_tokens
