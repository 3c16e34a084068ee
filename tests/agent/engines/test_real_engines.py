"""Each real engine on the tiny reference model: load, count, generate, stop, cancel, unload."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.base import Completion, Engine, LoadOptions, SamplingParams, TokenChunk
from agent.engines.registry import create_engine
from agent.errors import ContextOverflow, EngineError
from agent.selection import variant_path
from models.manifest import Manifest
from tests.support.engines import reference_engine

PROMPT = "<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(max_tokens=40, temperature=0.0, repeat_penalty=1.0)
CASES = [
    ("llamacpp", "gguf-q4_0"),
    ("llamacpp", "gguf-f32"),
    ("openvino", "openvino-int8"),
    ("onnxruntime", "onnx-fp32"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{e}-{v}" for e, v in CASES])
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Engine]:
    name, variant_id = request.param
    options = LoadOptions(threads=2, context_length=256)
    with reference_engine(tiny_model_dir, name, variant_id, options) as eng:
        yield eng


def run(
    engine: Engine, params: SamplingParams, cancel: threading.Event | None = None
) -> tuple[str, list[int], Completion]:
    items = list(engine.generate(PROMPT, params, cancel))
    done = items[-1]
    assert isinstance(done, Completion)
    chunks = [i for i in items[:-1] if isinstance(i, TokenChunk)]
    assert len(chunks) == len(items) - 1
    return "".join(c.text for c in chunks), [c.token_id for c in chunks], done


def test_loads_and_counts_tokens(engine: Engine) -> None:
    assert engine.context_length == 256
    assert engine.stats().device == "CPU"
    assert 5 < engine.count_tokens(PROMPT) < 60
    assert engine.count_tokens(PROMPT + " more words here") > engine.count_tokens(PROMPT)


def test_greedy_is_deterministic_and_stops_at_length(engine: Engine) -> None:
    first = run(engine, GREEDY)
    second = run(engine, GREEDY)
    assert first[:2] == second[:2]
    text, tokens, done = first
    assert text.strip()
    if done.finish_reason == "length":
        assert done.completion_tokens == GREEDY.max_tokens == len(tokens)
    assert done.prompt_tokens == engine.count_tokens(PROMPT)


def test_max_tokens_gives_length(engine: Engine) -> None:
    _, tokens, done = run(engine, SamplingParams(max_tokens=3, temperature=0.0))
    assert (done.finish_reason, done.completion_tokens, len(tokens)) == ("length", 3, 3)
    assert engine.stats().completion_tokens >= 3


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    params = SamplingParams(max_tokens=24, temperature=1.2, top_k=0, top_p=1.0, seed=11)
    assert run(engine, params)[1] == run(engine, params)[1]


def test_stop_string_cuts_the_text(engine: Engine) -> None:
    full, _, _ = run(engine, GREEDY)
    stop = full[10:13]
    cut = full.find(stop)
    text, _, done = run(engine, SamplingParams(**{**GREEDY.__dict__, "stop": (stop,)}))
    assert (text, done.finish_reason) == (full[:cut], "stop")


def test_cancel_ends_with_cancelled(engine: Engine) -> None:
    cancel = threading.Event()
    seen = 0
    done = None
    for item in engine.generate(PROMPT, SamplingParams(max_tokens=100, temperature=0.0), cancel):
        if isinstance(item, Completion):
            done = item
        else:
            seen += 1
            if seen == 2:
                cancel.set()
    assert done is not None and done.finish_reason == "cancelled" and done.completion_tokens == 2


def test_context_overflow(engine: Engine) -> None:
    with pytest.raises(ContextOverflow):
        list(engine.generate(PROMPT, SamplingParams(max_tokens=250)))


def test_unload_then_generate_raises(tiny_model_dir: Path) -> None:
    manifest = Manifest.load(tiny_model_dir)
    eng = create_engine("onnxruntime")
    eng.load(variant_path(tiny_model_dir, manifest.variant("onnx-fp32")), LoadOptions())
    eng.unload()
    with pytest.raises(EngineError, match="no model loaded"):
        list(eng.generate(PROMPT, GREEDY))


@pytest.mark.slow
def test_onnx_greedy_matches_transformers(tiny_model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = tiny_model_dir / "hf"
    if not hf.is_dir():
        pytest.skip("the reference model has no hf/ checkpoint")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = out[0, ids.shape[1] :].tolist()

    manifest = Manifest.load(tiny_model_dir)
    eng = create_engine("onnxruntime")
    eng.load(variant_path(tiny_model_dir, manifest.variant("onnx-fp32")), LoadOptions())
    _, tokens, _ = run(eng, SamplingParams(max_tokens=30, temperature=0.0, repeat_penalty=1.0))
    assert tokens == expected[: len(tokens)] and len(tokens) > 0
