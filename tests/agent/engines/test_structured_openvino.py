"""OpenVINO applies an OutputConstraint with genai's StructuredOutputConfig (tiny reference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest

from agent.engines.base import LoadOptions, OutputConstraint, SamplingParams, TokenChunk
from agent.structured import applies_constraints
from tests.support.engines import reference_engine

PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "b"]}},
    "required": ["n", "s"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def openvino(tiny_model_dir: Path) -> Iterator[object]:
    options = LoadOptions(threads=2, context_length=256)
    with reference_engine(tiny_model_dir, "openvino", "openvino-int8", options) as engine:
        yield engine


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
