"""Structured output, tool calls and embeddings on SmolLM2 through the real `openai` SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from agent.engines.base import LoadOptions
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread
from hwprobe.profile import HardwareProfile

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")

MODEL = "smollm2-135m-instruct.q4_1"  # a bare .gguf is served under its file stem
CPU_ONLY = HardwareProfile(device_class="cpu-x86", engines=["llamacpp"])
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def smollm2_server(smollm2_gguf: Path) -> Iterator[RunningServer]:
    runtime = ModelRuntime()
    # Four slots: the 50 structured answers below run four at a time in one batch.
    options = LoadOptions(context_length=2048, threads=2, parallel=4)
    asyncio.run(
        runtime.load_model(
            smollm2_gguf,
            profile=CPU_ONLY,
            installed={"llamacpp": "t"},
            prefer="llamacpp",
            options=options,
        )
    )
    with serve_in_thread(create_app(runtime)) as running:
        yield running
    assert runtime.known is not None
    runtime.known.engine.unload()  # here, not in a background thread the exit could cut


@pytest.fixture(scope="module")
def client(smollm2_server: RunningServer) -> Any:
    return openai.OpenAI(base_url=f"{smollm2_server.url}/v1", api_key="unused", timeout=300)


@pytest.mark.timeout(1800)
def test_fifty_json_schema_answers_at_temperature_0_8_all_validate(client: Any) -> None:
    validator = jsonschema_rs.validator_for(PERSON)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }

    def ask(seed: int) -> Any:
        return client.chat.completions.create(
            model=MODEL,
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
    reply = client.chat.completions.create(
        model=MODEL,
        temperature=0.8,
        seed=3,
        max_tokens=96,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat in JSON with two short keys."}],
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_required_tool_call_round_trip(client: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=MODEL,
        temperature=0.8,
        seed=1,
        max_tokens=48,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"})
    final = client.chat.completions.create(
        model=MODEL,
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
    stream = client.chat.completions.create(
        model=MODEL,
        temperature=0.8,
        seed=2,
        max_tokens=48,
        stream=True,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
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
