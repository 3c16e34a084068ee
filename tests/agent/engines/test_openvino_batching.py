"""OpenVINO continuous batching on the tiny reference model: batched greedy == solo, cancel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.openvino import OpenVinoEngine
from tests.support.engines import reference_engine
from tests.support.streams import collect, run_together

pytest.importorskip("openvino_genai")

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
PROMPTS = [
    f"<|im_start|>user\nTell me about {w}.<|im_end|>\n<|im_start|>assistant\n"
    for w in ("the sea", "bread", "a cat", "the moon")
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[OpenVinoEngine]:
    options = LoadOptions(threads=2, context_length=256, parallel=4)
    with reference_engine(tiny_model_dir, "openvino", "openvino-int8", options) as engine:
        assert isinstance(engine, OpenVinoEngine)
        yield engine


def _run(engine: OpenVinoEngine, prompt: str) -> str:
    return collect(engine.generate(prompt, GREEDY))[0]


def test_the_engine_batches_through_the_continuous_batching_pipeline(
    engine: OpenVinoEngine,
) -> None:
    assert engine.stats().extra == {"parallel": "4", "pipeline": "continuous batching"}
    assert engine.scheduler is not None


def test_greedy_output_is_the_same_alone_and_batched(engine: OpenVinoEngine) -> None:
    alone = [_run(engine, p) for p in PROMPTS]
    batched = run_together(lambda prompt: _run(engine, prompt), PROMPTS, timeout=120)
    assert batched == alone and all(alone)


def test_a_cancelled_stream_frees_its_slot(engine: OpenVinoEngine) -> None:
    cancel = threading.Event()
    long = SamplingParams(max_tokens=200, temperature=0.0, repeat_penalty=1.0)
    done = None
    for item in engine.generate(PROMPTS[0], long, cancel):
        if isinstance(item, TokenChunk):
            cancel.set()
        else:
            done = item
    assert isinstance(done, Completion) and done.finish_reason == "cancelled"
    assert engine.scheduler is not None and engine.scheduler.stats().running == 0
