"""OpenVINO continuous batching on the real SmolLM2 (INT8 IR from the project's own builder):
batched greedy output equals solo output, the requests really share the pipeline's steps, and
each token's log-probability is the model's own.

Exactly equal with `batch_invariant` (the default: f32, no dynamic quantization of
activations). With OpenVINO's CPU defaults (bf16 where the CPU has it, int8 activations) a
batch sums in another order and precision and a long answer may branch at a near-tie (measured:
3 of 6 prompts within 64 tokens): there every batched stream must still finish.

The model directory comes from tests/support/real_openvino.py: built once (about 1.5 min on
2 cores, plus about 1 min for the Hugging Face checkpoint) and cached under the model cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.openvino import OpenVinoEngine
from agent.selection import variant_path
from models.manifest import Manifest
from tests.agent.samples import BATCH_QUESTIONS, chatml_prompt
from tests.support.streams import collect, run_together

pytest.importorskip("openvino_genai")
pytest.importorskip("transformers")  # the build extra: the checkpoint and the IR are built here

GREEDY = SamplingParams(max_tokens=32, temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def smollm2_openvino_dir() -> Path:
    from tests.support.real_openvino import smollm2_openvino

    return smollm2_openvino()


def _load(model_dir: Path, *, batch_invariant: bool) -> OpenVinoEngine:
    variant = Manifest.load(model_dir).variant("openvino-int8")
    engine = OpenVinoEngine()
    options = LoadOptions(
        threads=2, context_length=1024, parallel=4, batch_invariant=batch_invariant
    )
    engine.load(variant_path(model_dir, variant), options)
    return engine


@pytest.fixture(scope="module")
def exact_engine(smollm2_openvino_dir: Path) -> Iterator[OpenVinoEngine]:
    engine = _load(smollm2_openvino_dir, batch_invariant=True)
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def default_engine(smollm2_openvino_dir: Path) -> Iterator[OpenVinoEngine]:
    engine = _load(smollm2_openvino_dir, batch_invariant=False)
    yield engine
    engine.unload()


def _steps(engine: OpenVinoEngine) -> int:
    assert engine.scheduler is not None
    return engine.scheduler.stats().steps


def _alone_and_batched(
    engine: OpenVinoEngine,
) -> tuple[list[tuple[str, Completion]], list[tuple[str, Completion] | None], int, int]:
    """Each prompt alone, then all together; the results and the steps each way took."""
    assert engine.stats().extra["pipeline"] == "continuous batching"
    prompts = [chatml_prompt(q) for q in BATCH_QUESTIONS]
    before = _steps(engine)
    alone = [collect(engine.generate(p, GREEDY)) for p in prompts]
    solo_steps = _steps(engine) - before
    before = _steps(engine)
    batched = run_together(lambda p: collect(engine.generate(p, GREEDY)), prompts, timeout=600)
    return alone, batched, solo_steps, _steps(engine) - before


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_batched_greedy_output_equals_solo_output(exact_engine: OpenVinoEngine) -> None:
    alone, batched, solo_steps, batched_steps = _alone_and_batched(exact_engine)
    assert [r[0] if r else None for r in batched] == [text for text, _ in alone]
    assert "Paris" in alone[0][0]
    assert all(done.completion_tokens > 0 for _, done in alone)
    # together they advanced in shared steps: far fewer than one after the other
    assert batched_steps < solo_steps / 2, (batched_steps, solo_steps)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_with_cpu_defaults_every_batched_stream_finishes(default_engine: OpenVinoEngine) -> None:
    alone, batched, solo_steps, batched_steps = _alone_and_batched(default_engine)
    assert all(r is not None and r[1].completion_tokens > 0 for r in batched)
    assert batched_steps < solo_steps / 2, (batched_steps, solo_steps)


def _raw_first_token_logprobs(model_dir: Path, prompt_ids: list[int]) -> Any:
    """log-softmax of the IR's logits after the prompt, run by OpenVINO itself (no genai)."""
    import numpy as np
    import openvino as ov

    from agent.engines.openvino import BATCH_INVARIANT_CPU

    variant = Manifest.load(model_dir).variant("openvino-int8")
    folder = variant_path(model_dir, variant)
    folder = folder if folder.is_dir() else folder.parent
    model = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", BATCH_INVARIANT_CPU)
    request = model.create_infer_request()
    n = len(prompt_ids)
    request.infer(
        {
            "input_ids": np.asarray([prompt_ids], np.int64),
            "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        }
    )
    logits = request.get_tensor("logits").data[0, -1].astype(np.float64)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_logprobs_are_the_models_own_for_each_chosen_token(
    exact_engine: OpenVinoEngine, smollm2_openvino_dir: Path
) -> None:
    prompt = chatml_prompt("What is the capital of France?")
    chunks = [
        c
        for c in exact_engine.generate(prompt, replace(GREEDY, max_tokens=12, logprobs=0))
        if isinstance(c, TokenChunk)
    ]
    found = [c.logprob for c in chunks]
    assert found and all(f is not None for f in found)
    entries = [f for f in found if f is not None]
    assert all(f.logprob <= 0 and f.top == () for f in entries)
    spelled = b"".join(f.token for f in entries).decode()
    assert spelled == "".join(c.text for c in chunks)
    raw = _raw_first_token_logprobs(smollm2_openvino_dir, exact_engine.tokenize(prompt))
    first = int(raw.argmax())  # greedy: the first token is the raw top-1 ...
    assert chunks[0].token_id == first
    # ... and genai's figure is its log-softmax: 0.03 apart here because the pipeline keeps its
    # KV cache compressed (OpenVINO's CPU default) where this run keeps f32; with
    # KV_CACHE_PRECISION f32 in the pipeline too they agree within 1e-4.
    assert entries[0].logprob == pytest.approx(float(raw[first]), abs=0.06)
    plain = [c for c in exact_engine.generate(prompt, GREEDY) if isinstance(c, TokenChunk)]
    assert [c.logprob for c in plain] == [None] * len(plain)  # not asked: none computed
