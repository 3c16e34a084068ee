"""Log-probabilities in the Responses API on SmolLM2 (llama.cpp), through the real `openai` SDK."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from agent.server.serve import RunningServer
from tests.agent.samples import SMOLLM2 as MODEL
from tests.agent.samples import weather_response_tool

pytest.importorskip("llama_cpp")

ASK: Any = {
    "model": MODEL,
    "input": "What is the capital of France?",
    "instructions": "You are a helpful assistant.",
    "temperature": 0,
    "max_output_tokens": 12,
}
INCLUDE: Any = ["message.output_text.logprobs"]


def _check_entry(entry: Any, k: int) -> None:
    """A real log-probability, k alternatives most likely first, the choice not above the first."""
    assert entry.logprob <= 0 and math.isfinite(entry.logprob)
    values = [t.logprob for t in entry.top_logprobs or []]
    assert len(values) == k
    assert values == sorted(values, reverse=True)
    if values:
        assert entry.logprob <= values[0] + 1e-6


def test_response_text_carries_one_entry_per_token(smollm2_openai: Any) -> None:
    reply = smollm2_openai.responses.create(**ASK, top_logprobs=3)
    part = reply.output[0].content[0]
    assert part.type == "output_text" and part.logprobs
    assert len(part.logprobs) == reply.usage.output_tokens
    assert "".join(e.token for e in part.logprobs) == part.text == reply.output_text
    for entry in part.logprobs:
        _check_entry(entry, 3)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    assert reply.top_logprobs == 3


def test_streamed_deltas_carry_their_tokens(smollm2_openai: Any) -> None:
    entries: list[Any] = []
    text = ""
    done: Any = None
    final: Any = None
    for event in smollm2_openai.responses.create(**ASK, top_logprobs=3, stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
            entries += event.logprobs
        elif event.type == "response.output_text.done":
            done = event
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert final is not None and entries
    assert len(entries) == final.usage.output_tokens
    assert "".join(e.token for e in entries) == text == done.text == final.output_text
    for entry in entries:
        _check_entry(entry, 3)
    assert [e.token for e in done.logprobs] == [e.token for e in entries]
    kept = final.output[0].content[0].logprobs
    assert [(e.token, e.logprob) for e in kept] == [(e.token, e.logprob) for e in entries]


def test_include_alone_gives_entries_without_alternatives(smollm2_openai: Any) -> None:
    reply = smollm2_openai.responses.create(**ASK, include=INCLUDE)
    found = reply.output[0].content[0].logprobs
    assert found and len(found) == reply.usage.output_tokens
    for entry in found:
        _check_entry(entry, 0)
    assert reply.top_logprobs is None
    plain = smollm2_openai.responses.create(**ASK)
    assert plain.output[0].content[0].logprobs == []


def test_out_of_range_or_unknown_include_is_refused(smollm2_openai: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            smollm2_openai.responses.create(**ASK, **extra)
        assert caught.value.status_code == 400
        assert caught.value.param == param, (extra, caught.value.body)


def test_tool_call_response_is_unaffected(smollm2_openai: Any) -> None:
    reply = smollm2_openai.responses.create(
        model=MODEL,
        input="What is the weather in Rome?",
        tools=[weather_response_tool(max_city=20)],
        tool_choice="required",
        temperature=0,
        max_output_tokens=40,
        top_logprobs=2,
    )
    call = reply.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)


def test_streamed_answer_with_tools_offered(smollm2_openai: Any) -> None:
    """Prose or calls as without logprobs; a message's entries spell the start of its text."""
    with smollm2_openai.responses.stream(
        model=MODEL,
        input="What is the weather in Oslo? Use the tool.",
        instructions="You are a helpful assistant.",
        tools=[weather_response_tool(max_city=20)],
        temperature=0,
        max_output_tokens=60,
        top_logprobs=2,
    ) as stream:
        deltas = [e for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    text = "".join(e.delta for e in deltas)
    assert final.output_text == text
    for item in final.output:
        if item.type == "function_call":
            assert item.name == "get_weather" and isinstance(json.loads(item.arguments), dict)
        else:
            spelled = "".join(e.token for e in item.content[0].logprobs)
            assert item.content[0].text.startswith(spelled)
            assert spelled == "".join(e.token for d in deltas for e in d.logprobs)


def test_engine_without_logprobs_refuses_naming_the_field(server: RunningServer) -> None:
    """The fake engine hands out no logits: 400 in OpenAI's shape, as chat completions."""
    for extra, param in (({"top_logprobs": 2}, "top_logprobs"), ({"include": INCLUDE}, "include")):
        reply = httpx.post(
            f"{server.url}/v1/responses", json={"model": "fake", "input": "hi", **extra}
        )
        assert reply.status_code == 400, extra
        error = reply.json()["error"]
        assert error["param"] == param and error["code"] == "unsupported_on_engine"
