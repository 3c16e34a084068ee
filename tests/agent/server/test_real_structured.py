"""Structured output, tool calls and embeddings on SmolLM2 through the real `openai` SDK."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema_rs
import pytest

from tests.agent.samples import SMOLLM2 as MODEL
from tests.agent.samples import person_schema, weather_tool

pytest.importorskip("llama_cpp")

PERSON = person_schema(max_name=10)
WEATHER_TOOL = weather_tool(max_city=20)


def _chat(client: Any, **fields: Any) -> Any:
    return client.chat.completions.create(model=MODEL, **fields)


def _sampled(client: Any, question: str, *, seed: int, max_tokens: int, **fields: Any) -> Any:
    """One user question, sampled at temperature 0.8 with a fixed seed."""
    return _chat(
        client,
        temperature=0.8,
        seed=seed,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": question}],
        **fields,
    )


@pytest.fixture(scope="module")
def client(smollm2_openai: Any) -> Any:
    return smollm2_openai


@pytest.mark.timeout(1800)
def test_fifty_json_schema_answers_at_temperature_0_8_all_validate(client: Any) -> None:
    validator = jsonschema_rs.validator_for(PERSON)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }

    def ask(seed: int) -> Any:
        return _chat(
            client,
            temperature=0.8,
            seed=seed,
            max_tokens=40,
            response_format=fmt,
            messages=[
                {"role": "system", "content": "Answer in JSON."},
                {"role": "user", "content": "Invent a person."},
            ],
        )

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(50)))
    for reply in replies:
        text = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop", text
        validator.validate(json.loads(text))


def test_json_object_parses(client: Any) -> None:
    reply = _sampled(
        client,
        "Describe a cat in JSON with two short keys.",
        seed=3,
        max_tokens=96,
        response_format={"type": "json_object"},
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_required_tool_call_round_trip(client: Any) -> None:
    question = "What is the weather in Paris?"
    first = _sampled(
        client, question, seed=1, max_tokens=48, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": question},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"},
    ]
    final = _chat(
        client,
        temperature=0,
        max_tokens=40,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_named_tool_call_streams_as_the_sdk_expects(client: Any) -> None:
    stream = _sampled(
        client,
        "Weather in Oslo?",
        seed=2,
        max_tokens=48,
        stream=True,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    names, arguments, reasons = [], "", []
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                names.append(call.function.name)
                arguments += call.function.arguments or ""
            reasons.append(choice.finish_reason)
    assert "get_weather" in names and reasons[-1] == "tool_calls"
    assert "city" in json.loads(arguments)


def test_embeddings_are_normalised_and_batched(client: Any) -> None:
    reply = client.embeddings.create(model=MODEL, input=["a cat", "a dog", "tax law"])
    vectors = [d.embedding for d in reply.data]
    assert len(vectors) == 3 and len(vectors[0]) > 100
    for v in vectors:
        assert abs(sum(x * x for x in v) - 1.0) < 1e-3
    assert reply.usage.prompt_tokens > 3
