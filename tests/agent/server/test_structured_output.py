"""Structured output, tool calls and refusals on the fake engine (API shapes, both APIs)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from agent.server.serve import RunningServer
from tests.agent.samples import person_schema, weather_called, weather_tool

PERSON = person_schema()
WEATHER = weather_tool()
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_json_schema_answer_matches_the_schema(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    reply = client.chat.completions.create(model="fake", messages=USER, response_format=fmt)
    person = json.loads(reply.choices[0].message.content or "")
    assert set(person) == {"name", "age"} and len(person["name"]) <= 8


def test_json_object_answer_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="fake", messages=USER, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_schema_keyword_the_grammar_cannot_enforce_is_refused(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake", messages=USER, response_format=fmt)
    assert "minimum" in str(caught.value) and caught.value.body["param"] == "response_format"


def test_required_tool_call_is_forced_and_valid(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="fake", messages=USER, tools=[WEATHER], tool_choice="required"
    )  # type: ignore[list-item]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_streamed_tool_call_accumulates_in_the_sdk(client: openai.OpenAI) -> None:
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    stream = client.chat.completions.create(
        model="fake", messages=USER, tools=[WEATHER], tool_choice=choice, stream=True
    )  # type: ignore[list-item]
    args, reasons = "", []
    for chunk in stream:
        for c in chunk.choices:
            for call in c.delta.tool_calls or []:
                args += (call.function and call.function.arguments) or ""
            reasons.append(c.finish_reason)
    assert json.loads(args)["city"] and reasons[-1] == "tool_calls"


def test_tool_results_are_fed_back(client: openai.OpenAI) -> None:
    messages: Any = [*USER, *weather_called("Oslo")]
    reply = client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
    assert reply.choices[0].finish_reason in ("stop", "length")  # type: ignore[list-item]


def test_unknown_tool_choice_and_unsupported_fields_are_refused(server: RunningServer) -> None:
    url = f"{server.url}/v1/chat/completions"
    cases = [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"audio": {"voice": "x"}}, "audio"),
    ]
    for extra, param in cases:
        reply = httpx.post(url, json={"model": "fake", "messages": USER, **extra})
        assert reply.status_code == 400, extra
        assert reply.json()["error"]["param"] == param


def test_ollama_format_schema_and_json(server: RunningServer) -> None:
    for fmt in ("json", PERSON):
        body = {"model": "fake", "messages": USER, "format": fmt, "stream": False}
        reply = httpx.post(f"{server.url}/api/chat", json=body)
        assert reply.status_code == 200, reply.text
        assert isinstance(json.loads(reply.json()["message"]["content"]), dict)


def test_ollama_images_think_and_unknown_options_are_refused(server: RunningServer) -> None:
    cases = [
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "images"),
        ({"messages": USER, "think": True}, "think"),
        ({"messages": USER, "options": {"mirostat": 1}}, "mirostat"),
        ({"messages": USER, "options": {"num_ctx": 10**6}}, "num_ctx"),
    ]
    for extra, word in cases:
        reply = httpx.post(
            f"{server.url}/api/chat", json={"model": "fake", "stream": False, **extra}
        )
        assert reply.status_code == 400, extra
        assert word in reply.json()["error"]


def test_ollama_tools_in_the_prompt_and_calls_parsed(server: RunningServer) -> None:
    body = {"model": "fake", "messages": USER, "tools": [WEATHER], "stream": True}
    lines = httpx.post(f"{server.url}/api/chat", json=body).text.splitlines()
    assert json.loads(lines[-1])["done"] is True


def test_ollama_root_answers_running(server: RunningServer) -> None:
    assert httpx.get(server.url + "/").text == "Ollama is running"
    assert httpx.head(server.url + "/").status_code == 200


def test_prose_streams_when_tools_are_offered(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake", messages=USER, tools=[WEATHER], stream=True, max_tokens=6
    )  # type: ignore[list-item]
    text, reasons, calls = "", [], 0
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            calls += len(c.delta.tool_calls or [])
            reasons.append(c.finish_reason)
    assert len(text.split()) == 6 and calls == 0 and reasons[-1] == "length"


def test_ollama_stream_with_tools_sends_prose_lines(server: RunningServer) -> None:
    body = {"model": "fake", "messages": USER, "tools": [WEATHER], "options": {"num_predict": 4}}
    reply = httpx.post(f"{server.url}/api/chat", json=body)
    lines = [json.loads(x) for x in reply.text.splitlines()]
    assert "".join(x["message"]["content"] for x in lines).split() and lines[-1]["done"]


def test_logprobs_and_suffix_are_refused_where_engine_or_model_lack_them(
    server: RunningServer,
) -> None:
    """The fake engine hands out no logits and its model has no fill-in-the-middle tokens."""
    openai_cases = [
        ("/v1/chat/completions", {"messages": USER, "logprobs": True}, "logprobs"),
        ("/v1/chat/completions", {"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ("/v1/completions", {"prompt": "hi", "logprobs": 1}, "logprobs"),
        ("/v1/completions", {"prompt": "hi", "suffix": "!"}, "suffix"),
    ]
    for path, extra, param in openai_cases:
        reply = httpx.post(f"{server.url}{path}", json={"model": "fake", **extra})
        assert reply.status_code == 400, (path, extra)
        assert reply.json()["error"]["param"] == param
    ollama_cases = [
        ("/api/generate", {"prompt": "hi", "logprobs": True}, "logprobs"),
        ("/api/chat", {"messages": USER, "logprobs": True}, "logprobs"),
        ("/api/generate", {"prompt": "hi", "suffix": "!"}, "suffix"),
    ]
    for path, extra, field in ollama_cases:
        reply = httpx.post(f"{server.url}{path}", json={"model": "fake", "stream": False, **extra})
        assert reply.status_code == 400, (path, extra)
        assert reply.json()["error"].startswith(f"{field}:")
