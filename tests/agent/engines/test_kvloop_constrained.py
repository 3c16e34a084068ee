"""Constrained decoding in the shared KV loop (ONNX Runtime, TensorRT) with llguidance.

The fake-logits engine drives the exact loop TensorRT runs (only the Stepper differs), so the
mask is proven here without a GPU; the ONNX Runtime tests run the real tiny reference model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.constrained import MaskedSampler
from agent.engines.kvloop import Logits
from agent.engines.registry import create_engine, installed_engines
from agent.structured import applies_constraints, json_constraint
from agent.tool_calls import Tool, forced_call, forced_call_schema
from tests.agent.engines.kv_engines import FakeStepEngine
from tests.support.engines import reference_engine

pytest.importorskip("llguidance")

PADDING = 16  # logits past the tokenizer's vocabulary, as padded exports have
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "admin": {"type": "boolean"},
    },
    "required": ["name", "mood", "admin"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
SEARCH = Tool(
    name="search",
    description="Search the web.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 12}},
        "required": ["query"],
    },
)
PROMPT = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"


class RandomLogits:
    """A 'model' with random logits and a strong liking for the padded ids past the vocab."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def step(self, token_ids: Sequence[int]) -> Logits:
        logits = self.rng.normal(scale=3.0, size=self.vocab + PADDING).astype(np.float32)
        logits[self.vocab :] = 50.0  # never a real token: the mask must drop these
        return logits

    def close(self) -> None:
        pass


def generate(engine: Any, params: SamplingParams, prompt: str = PROMPT) -> tuple[str, Completion]:
    items = list(engine.generate(prompt, params))
    done = items[-1]
    assert isinstance(done, Completion)
    text = "".join(i.text for i in items if isinstance(i, TokenChunk))
    return text, done


@pytest.fixture
def fake_engine(tiny_model_dir: Path) -> Iterator[FakeStepEngine]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    engine = FakeStepEngine(RandomLogits(tokenizer.get_vocab_size(with_added_tokens=True)))
    engine.load(tiny_model_dir / "onnx", LoadOptions(context_length=512))
    yield engine
    engine.unload()


def test_random_logits_follow_the_schema_in_the_shared_loop(
    fake_engine: FakeStepEngine,
) -> None:
    assert applies_constraints(fake_engine)
    validator = jsonschema_rs.validator_for(PERSON)
    constraint = json_constraint(PERSON)
    for seed in range(20):
        params = SamplingParams(max_tokens=200, temperature=1.0, seed=seed, constraint=constraint)
        text, done = generate(fake_engine, params)
        assert done.finish_reason == "stop", text
        validator.validate(json.loads(text))


def test_any_json_object_without_a_schema(fake_engine: FakeStepEngine) -> None:
    params = SamplingParams(max_tokens=300, temperature=0.0, constraint=json_constraint(None))
    text, _ = generate(fake_engine, params)
    # greedy on noise may run out of tokens, but what it wrote is the start of an object
    assert text.startswith("{")


def test_unconstrained_requests_never_build_the_grammar(fake_engine: FakeStepEngine) -> None:
    text, done = generate(fake_engine, SamplingParams(max_tokens=8, temperature=0.0))
    assert done.completion_tokens == 8
    assert fake_engine._grammars is None  # no tokenizer conversion, no mask per step


def test_mask_drops_padding_and_forbidden_tokens(fake_engine: FakeStepEngine) -> None:
    compiler = fake_engine._grammar_compiler(fake_engine._loaded()[1])
    sampler = compiler.sampler(_Greedy(), json_constraint({"enum": ["yes"]}))
    assert isinstance(sampler, MaskedSampler)
    logits = np.zeros(compiler.vocab_size + PADDING, dtype=np.float32)
    masked = sampler.masked(logits)
    allowed = np.flatnonzero(np.isfinite(masked))
    assert allowed.size > 0 and allowed.max() < compiler.vocab_size
    assert allowed.size < compiler.vocab_size // 4  # only tokens that can start '"yes"'


class _Greedy:
    def remember(self, tokens: Any) -> None:
        pass

    def sample(self, logits: Any) -> int:
        return int(np.argmax(logits))


# -- ONNX Runtime on the tiny reference model ------------------------------------------------


@pytest.fixture(scope="module")
def onnx_engine(tiny_model_dir: Path) -> Iterator[Any]:
    options = LoadOptions(threads=2, context_length=512)
    with reference_engine(tiny_model_dir, "onnxruntime", "onnx-fp32", options) as engine:
        yield engine


@pytest.mark.timeout(600)
def test_onnx_fifty_answers_at_temperature_0_8_all_validate(onnx_engine: Any) -> None:
    assert applies_constraints(onnx_engine)
    validator = jsonschema_rs.validator_for(PERSON)
    constraint = json_constraint(PERSON)
    answers = set()
    for seed in range(50):
        params = SamplingParams(max_tokens=200, temperature=0.8, seed=seed, constraint=constraint)
        text, done = generate(onnx_engine, params)
        assert done.finish_reason == "stop", text
        validator.validate(json.loads(text))
        answers.add(text)
    assert len(answers) > 10  # sampled, not one forced answer


def test_onnx_forced_tool_call_arguments_validate(onnx_engine: Any) -> None:
    tools = [WEATHER, SEARCH]
    for name in ("get_weather", None):  # a named function, then tool_choice "required"
        constraint = json_constraint(forced_call_schema(tools, name))
        for seed in range(5):
            params = SamplingParams(
                max_tokens=200, temperature=0.8, seed=seed, constraint=constraint
            )
            text, done = generate(onnx_engine, params)
            assert done.finish_reason == "stop", text
            call = forced_call(text)
            tool = next(t for t in tools if t.name == call.name)
            assert name is None or call.name == name
            jsonschema_rs.validator_for(dict(tool.parameters)).validate(json.loads(call.arguments))


# -- ONNX Runtime on SmolLM2-135M-Instruct (real weights, 49k-token vocabulary) -----------------


@pytest.fixture(scope="session")
def smollm2_onnx(smollm2_hf: Path) -> Path:
    """SmolLM2's checkpoint exported to ONNX once per model cache (about 90 s the first time)."""
    import os
    import shutil
    import tempfile

    pytest.importorskip("optimum.exporters.onnx")
    from models.build.onnx_export import export_onnx
    from models.real_models import CHECKPOINT_VERSION, cache_dir

    target = cache_dir() / f"smollm2-onnx-{CHECKPOINT_VERSION}"
    if not (target / "model.onnx").is_file():
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".onnx-") as tmp:
            export_onnx(smollm2_hf, Path(tmp) / "onnx")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(Path(tmp) / "onnx", target)
    return target


@pytest.mark.timeout(1800)
def test_smollm2_onnx_answers_and_calls_validate_at_temperature_0_8(smollm2_onnx: Path) -> None:
    if "onnxruntime" not in installed_engines():
        pytest.skip("onnxruntime is not installed")
    engine = create_engine("onnxruntime")
    engine.load(smollm2_onnx, LoadOptions(threads=2, context_length=2048))
    try:
        validator = jsonschema_rs.validator_for(PERSON)
        prompt = (
            "<|im_start|>user\nDescribe a person as JSON with name, mood, tags and admin."
            "<|im_end|>\n<|im_start|>assistant\n"
        )
        for seed in range(20):
            params = SamplingParams(
                max_tokens=120, temperature=0.8, seed=seed, constraint=json_constraint(PERSON)
            )
            text, done = generate(engine, params, prompt)
            assert done.finish_reason == "stop", text
            validator.validate(json.loads(text))
        call_prompt = (
            "<|im_start|>user\nWhat is the weather in Oslo?<|im_end|>\n<|im_start|>assistant\n"
        )
        constraint = json_constraint(forced_call_schema([WEATHER, SEARCH], "get_weather"))
        params = SamplingParams(max_tokens=120, temperature=0.8, seed=1, constraint=constraint)
        text, done = generate(engine, params, call_prompt)
        call = forced_call(text)
        assert call.name == "get_weather"
        jsonschema_rs.validator_for(dict(WEATHER.parameters)).validate(json.loads(call.arguments))
    finally:
        engine.unload()
