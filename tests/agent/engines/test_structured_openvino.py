"""OpenVINO applies an OutputConstraint with genai's StructuredOutputConfig (tiny reference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest

from agent.engines.base import LoadOptions, OutputConstraint, SamplingParams, TokenChunk
from agent.engines.registry import create_engine, installed_engines
from agent.selection import variant_path
from agent.structured import applies_constraints
from models.manifest import Manifest

PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "b"]}},
    "required": ["n", "s"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def openvino(tiny_model_dir: Path) -> Iterator[object]:
    if "openvino" not in installed_engines():
        pytest.skip("openvino is not installed")
    manifest = Manifest.load(tiny_model_dir)
    engine = create_engine("openvino")
    path = variant_path(tiny_model_dir, manifest.variant("openvino-int8"))
    engine.load(path, LoadOptions(threads=2, context_length=256))
    yield engine
    engine.unload()


def test_random_weights_still_answer_schema_valid_json(openvino: object) -> None:
    assert applies_constraints(openvino)
    constraint = OutputConstraint(json.dumps(SCHEMA))
    validator = jsonschema_rs.validator_for(SCHEMA)
    for seed in range(3):
        params = SamplingParams(max_tokens=80, temperature=0.8, seed=seed, constraint=constraint)
        items = list(openvino.generate(PROMPT, params))  # type: ignore[attr-defined]
        text = "".join(i.text for i in items if isinstance(i, TokenChunk))
        assert items[-1].finish_reason == "stop", text
        validator.validate(json.loads(text))
