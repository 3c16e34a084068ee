"""The batch scheduler over the fake backend: slots, chunked prompts, cancellation, prefix cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.batching import BatchScheduler
from agent.engines.fake_batching import WORDS, FakeBatchBackend, FakeBatchingEngine, fake_tokens
from agent.engines.scheduling import BatchRequest, defer_to_step_end, deferred_to_step_end
from agent.generation import Generation, start_batched
from tests.support.polling import wait_until
from tests.support.streams import collect, run_together

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)


@pytest.fixture
def engine() -> Iterator[FakeBatchingEngine]:
    engine = FakeBatchingEngine(n_slots=4)
    engine.load(Path("fake"), LoadOptions())
    yield engine
    engine.unload()


def _run(
    engine: FakeBatchingEngine, prompt: str, params: SamplingParams = GREEDY
) -> tuple[str, Completion]:
    return collect(engine.generate(prompt, params))


def _together(
    engine: FakeBatchingEngine, jobs: list[tuple[str, SamplingParams]]
) -> list[str | None]:
    with _all_queued_first(engine, len(jobs)):
        return run_together(lambda job: _run(engine, *job)[0], jobs)


@contextmanager
def _all_queued_first(engine: FakeBatchingEngine, n: int) -> Iterator[None]:
    """Hold the backend's steps until `n` requests are running or queued, so that they share
    steps however slowly the test's threads start (a loaded machine could let the first
    request finish before the last one arrives)."""
    scheduler = engine.scheduler
    assert scheduler is not None
    gate = engine.backend.gate = threading.Event()

    def open_when_all_arrived() -> None:
        try:
            wait_until(
                lambda: scheduler.stats().running + scheduler.stats().waiting >= n,
                f"{n} requests in the scheduler",
            )
        finally:
            gate.set()

    opener = threading.Thread(target=open_when_all_arrived)
    opener.start()
    try:
        yield
    finally:
        gate.set()
        opener.join()
        engine.backend.gate = None


def test_greedy_output_is_the_same_alone_and_in_a_batch(engine: FakeBatchingEngine) -> None:
    prompts = [f"question number {i} about {WORDS[i]}" for i in range(6)]
    alone = [_run(engine, p)[0] for p in prompts]
    engine.backend.steps.clear()
    batched = _together(engine, [(p, GREEDY) for p in prompts])
    assert batched == alone
    assert max(len(step) for step in engine.backend.steps) > 1  # they really shared steps


def test_per_request_stops_seeds_and_max_tokens_stay_independent(
    engine: FakeBatchingEngine,
) -> None:
    sampled = SamplingParams(max_tokens=20, temperature=0.9, seed=7)
    jobs = [
        ("a b c", SamplingParams(max_tokens=3, temperature=0.0)),
        ("a b c", sampled),
        ("d e f", SamplingParams(max_tokens=30, temperature=0.0, stop=("golf",))),
    ]
    alone = [_run(engine, p, s)[0] for p, s in jobs]
    assert len(alone[0].split()) == 3 and len(alone[1].split()) == 20
    assert "golf" not in alone[2]
    assert _together(engine, jobs) == alone


def test_a_cancelled_stream_frees_its_slot_at_once() -> None:
    backend = FakeBatchBackend(step_delay_s=0.002)
    engine = FakeBatchingEngine(backend, n_slots=1)
    engine.load(Path("fake"), LoadOptions())
    try:
        cancel = threading.Event()
        stream = engine.generate("long one", SamplingParams(max_tokens=100_000), cancel)
        assert isinstance(next(stream), TokenChunk)
        cancel.set()
        *_, done = stream
        assert isinstance(done, Completion) and done.finish_reason == "cancelled"
        assert done.completion_tokens < 100_000
        assert engine.scheduler is not None and engine.scheduler.stats().running == 0
        text, after = _run(engine, "next one")  # the only slot is free again
        assert after.finish_reason == "length" and text
    finally:
        engine.unload()


def test_a_queued_request_waits_for_a_slot_in_arrival_order() -> None:
    backend = FakeBatchBackend(step_delay_s=0.001)
    scheduler = BatchScheduler(backend, n_slots=1)
    order: list[int] = []
    finished = threading.Semaphore(0)

    def sink_for(i: int) -> object:
        def sink(item: object) -> None:
            if isinstance(item, TokenChunk) and i not in order:
                order.append(i)
            if isinstance(item, Completion | BaseException):
                finished.release()

        return sink

    try:
        for i in range(4):
            scheduler.submit(BatchRequest(fake_tokens(f"p{i}"), GREEDY, sink_for(i)))  # type: ignore[arg-type]
        for _ in range(4):
            assert finished.acquire(timeout=10)
        assert order == [0, 1, 2, 3]
    finally:
        scheduler.close()


def _chunking_engine() -> tuple[FakeBatchBackend, FakeBatchingEngine]:
    """Two slots; prompts fed 16 tokens a step beside running streams."""
    backend = FakeBatchBackend(n_batch=64, step_delay_s=0.001)
    engine = FakeBatchingEngine(backend, n_slots=2)
    engine.load(Path("fake"), LoadOptions())
    assert engine.scheduler is not None
    engine.scheduler.prefill_chunk = 16
    return backend, engine


def test_a_long_prompt_is_fed_in_chunks_next_to_running_streams() -> None:
    backend, engine = _chunking_engine()
    try:
        long_prompt = " ".join(WORDS[i % 16] for i in range(200))
        _together(
            engine,
            [("short", SamplingParams(max_tokens=300, temperature=0.0)), (long_prompt, GREEDY)],
        )
        mixed = [s for s in backend.steps if len(s) == 2]
        assert mixed, "the long prompt never shared a step with the running stream"
        for step in backend.steps:
            prompt_tokens = [n for _, n, _ in step if n > 1]
            decodes = [n for _, n, _ in step if n == 1]
            if decodes and prompt_tokens:
                assert sum(prompt_tokens) <= 16
    finally:
        engine.unload()


def test_a_follow_up_turn_reuses_the_cached_conversation(engine: FakeBatchingEngine) -> None:
    first = "system you are kind user hello there"
    reply, _ = _run(engine, first)
    scheduler = engine.scheduler
    assert scheduler is not None
    before = scheduler.stats().prefix_hit_tokens
    follow_up = f"{first}{reply} user and then"
    _, done = _run(engine, follow_up)
    reused = scheduler.stats().prefix_hit_tokens - before
    # everything but the last generated token (never evaluated) and the new turn
    assert reused == len(fake_tokens(first)) + len(reply.split()) - 1
    assert done.prompt_tokens == len(fake_tokens(follow_up))
    # the same result as computing it from scratch
    cold = FakeBatchingEngine(prefix_cache=False)
    cold.load(Path("fake"), LoadOptions())
    try:
        assert _run(cold, follow_up)[0] == _run(engine, follow_up)[0]
    finally:
        cold.unload()


def test_the_prefix_cache_keeps_the_most_recent_conversations_in_idle_streams() -> None:
    backend = FakeBatchBackend(n_seq=4)
    engine = FakeBatchingEngine(backend, n_slots=2)
    engine.load(Path("fake"), LoadOptions())
    conversations = [f"conversation {' '.join([WORDS[i]] * 5)}" for i in range(6)]
    try:
        scheduler = engine.scheduler
        assert scheduler is not None
        for prompt in conversations:
            _run(engine, prompt)
        assert scheduler.stats().cached_prefixes == 4  # one a stream
        hits = scheduler.stats().prefix_hit_tokens
        _run(engine, conversations[1] + " more")  # the least recent ones gave way
        assert scheduler.stats().prefix_hit_tokens == hits
        _run(engine, conversations[5] + " more")
        assert scheduler.stats().prefix_hit_tokens > hits
    finally:
        engine.unload()


def test_kv_usage_counts_running_and_cached_sequences_with_shared_prefixes_once() -> None:
    backend = FakeBatchBackend(n_cells=1000, gate=threading.Event())
    engine = FakeBatchingEngine(backend, n_slots=2)
    engine.load(Path("fake"), LoadOptions())
    assert engine.scheduler is not None
    try:
        cancel = threading.Event()
        stream = engine.generate("a b c d e f g h", SamplingParams(max_tokens=1000), cancel)
        backend.gate.set()  # type: ignore[union-attr]
        next(stream)
        assert engine.scheduler.stats().kv_usage > 0  # the running sequence holds cells
        cancel.set()
        for _ in stream:
            pass
        cached = engine.scheduler.stats()
        assert cached.running == 0 and cached.cached_prefixes == 1 and cached.kv_usage > 0
    finally:
        engine.unload()


def test_calls_deferred_in_a_step_are_made_once_per_key_when_it_ends() -> None:
    made: list[tuple[str, list[Any]]] = []
    assert not defer_to_step_end("loop", lambda args: made.append(("a", args)), 1)
    with pytest.raises(RuntimeError), deferred_to_step_end():
        assert defer_to_step_end("loop", lambda args: made.append(("a", args)), 1)
        assert defer_to_step_end("other", lambda args: made.append(("b", args)), 2)
        assert defer_to_step_end("loop", lambda args: made.append(("a", args)), 3)
        assert made == []
        raise RuntimeError("a sink failed")  # the deferred calls are still made
    assert made == [("a", [1, 3]), ("b", [2])]
    assert not defer_to_step_end("loop", lambda args: made.append(("a", args)), 4)


def test_one_step_wakes_all_its_readers_on_a_loop_with_one_call() -> None:
    engine = FakeBatchingEngine(FakeBatchBackend(step_delay_s=0.005), n_slots=4)
    engine.load(Path("fake"), LoadOptions())
    prompts = [f"question number {i} about {WORDS[i]}" for i in range(4)]
    try:
        alone = [_run(engine, p)[0] for p in prompts]
        engine.backend.steps.clear()

        async def scenario() -> tuple[list[str], int]:
            loop = asyncio.get_running_loop()
            calls = 0
            threadsafe = loop.call_soon_threadsafe

            def counted(callback: Any, *args: Any) -> asyncio.Handle:
                nonlocal calls
                calls += 1
                return threadsafe(callback, *args)

            loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
            assert engine.scheduler is not None
            generations = [
                start_batched(
                    Generation(None, GREEDY, 0, batch_interval_s=0),
                    engine.scheduler,
                    engine.tokenize(p),
                )
                for p in prompts
            ]
            texts = await asyncio.wait_for(asyncio.gather(*(g.text() for g in generations)), 30)
            return texts, calls

        texts, calls = asyncio.run(scenario())
        assert texts == alone
        # at most one wake-up a step for all readers, and one end per generation
        assert calls <= len(engine.backend.steps) + len(prompts)
    finally:
        engine.unload()


def test_prompt_logprobs_score_every_prompt_token_across_chunks_without_the_prefix_cache() -> None:
    backend, engine = _chunking_engine()
    long_prompt = " ".join(WORDS[i % 16] for i in range(100))
    scoring = SamplingParams(max_tokens=2, temperature=0.0, prompt_logprobs=0)
    try:
        _run(engine, long_prompt)  # now cached: a plain request would reuse all of it
        with _all_queued_first(engine, 2):
            results: list[Any] = run_together(
                lambda job: _run(engine, *job),
                [
                    ("short", SamplingParams(max_tokens=200, temperature=0.0)),
                    (long_prompt, scoring),
                ],
            )
        done = results[1][1]
        ids = fake_tokens(long_prompt)
        assert done.prompt_logprobs is not None
        assert done.prompt_logprobs.first == backend.piece(ids[0])
        scored = done.prompt_logprobs.scored
        # one entry per prompt token after the first, each from the row just before it, in
        # order across the chunks the prompt was fed in beside the other stream
        assert [s.token for s in scored] == [backend.piece(t) for t in ids[1:]]
        assert [s.logprob for s in scored] == [-at / 10 for at in range(len(ids) - 1)]
        assert any(len(step) == 2 for step in backend.steps)  # it did share steps
        assert results[0][1].prompt_logprobs is None  # not asked: none
    finally:
        engine.unload()
