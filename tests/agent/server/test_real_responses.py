"""The Responses API (HTTP and WebSocket) and the `ollama` package on SmolLM2."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest

from agent.server.serve import RunningServer
from tests.agent.samples import SMOLLM2 as MODEL
from tests.agent.samples import weather_response_tool

pytest.importorskip("llama_cpp")
pytest.importorskip("websockets")
ollama = pytest.importorskip("ollama")

COLOR = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    "required": ["color", "count"],
    "additionalProperties": False,
}
WEATHER: Any = weather_response_tool(max_city=20)


@pytest.fixture(scope="module")
def client(smollm2_openai: Any) -> Any:
    return smollm2_openai


@pytest.fixture(scope="module")
def smollm2(smollm2_server: RunningServer) -> RunningServer:
    return smollm2_server


def _weather_in_rome(client: Any, **extra: Any) -> Any:
    """A response that must call get_weather."""
    return client.responses.create(
        model=MODEL,
        input="What is the weather in Rome?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=40,
        **extra,
    )


def test_responses_create_text_and_schema(client: Any) -> None:
    reply = client.responses.create(
        model=MODEL,
        input="What is the capital of France?",
        temperature=0,
        instructions="You are a helpful assistant.",
        max_output_tokens=24,
    )
    assert reply.output_text.strip()
    fmt = {"format": {"type": "json_schema", "name": "c", "schema": COLOR, "strict": True}}
    shaped = client.responses.create(
        model=MODEL, input="Pick a color.", temperature=0.8, max_output_tokens=32, text=fmt
    )
    assert shaped.status == "completed"
    jsonschema_rs.validate(COLOR, json.loads(shaped.output_text))


def test_responses_tool_call_round_trip(client: Any) -> None:
    first = _weather_in_rome(client, temperature=0.8)
    call = first.output[0]
    assert call.type == "function_call" and "city" in json.loads(call.arguments)
    final = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        temperature=0,
        max_output_tokens=24,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
    )
    assert final.output_text.strip()


def test_responses_websocket_two_turns(client: Any) -> None:
    with client.responses.connect() as connection:
        previous = None
        for prompt in ("Name a fruit.", "Name another one."):
            connection.response.create(
                model=MODEL,
                input=prompt,
                max_output_tokens=12,
                temperature=0,
                previous_response_id=previous,
            )
            deltas = ""
            for event in connection:
                assert event.type != "error", event
                if event.type == "response.output_text.delta":
                    deltas += event.delta
                if event.type in ("response.completed", "response.incomplete"):
                    assert event.response.output_text == deltas
                    previous = event.response.id
                    break
    assert previous is not None


def test_ollama_package_format_schema_and_embed(smollm2: RunningServer) -> None:
    client = ollama.Client(host=smollm2.url, timeout=300)
    reply = client.chat(
        model=MODEL,
        format=COLOR,
        options={"temperature": 0.8, "num_predict": 32},
        messages=[{"role": "user", "content": "Pick a color."}],
    )
    jsonschema_rs.validate(COLOR, json.loads(reply.message.content or ""))
    embedded = client.embed(model=MODEL, input=["red", "blue"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 100


def test_responses_stream_a_forced_call_as_argument_deltas(client: Any) -> None:
    stream = _weather_in_rome(client, temperature=0, stream=True)
    kinds: list[str] = []
    deltas: list[str] = []
    done: Any = None
    final: Any = None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_item.added":
            assert event.item.type == "function_call" and event.item.name == "get_weather"
        elif event.type == "response.function_call_arguments.delta":
            deltas.append(event.delta)
        elif event.type == "response.function_call_arguments.done":
            done = event
        elif event.type == "response.completed":
            final = event.response
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    assert len(deltas) > 1  # streamed while generated, not in one piece at the end
    call = final.output[0]
    assert "".join(deltas) == done.arguments == call.arguments
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert done.item_id == call.id and call.status == "completed"


def test_responses_stream_helper_accumulates_prose_or_calls(client: Any) -> None:
    with client.responses.stream(
        model=MODEL,
        input="What is the weather in Oslo? Use the tool.",
        instructions="You are a helpful assistant.",  # without it SmolLM2 recites the schema
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=60,
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    for call in calls:
        assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)
    assert final.output_text == text
    assert calls or text
