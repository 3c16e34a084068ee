"""The Responses API (HTTP and WebSocket) and the `ollama` package on SmolLM2."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
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
pytest.importorskip("websockets")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

MODEL = "smollm2-135m-instruct.q4_1"
CPU_ONLY = HardwareProfile(device_class="cpu-x86", engines=["llamacpp"])
COLOR = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    "required": ["color", "count"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> Iterator[RunningServer]:
    runtime = ModelRuntime()
    options = LoadOptions(context_length=1024, threads=2, parallel=2)
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
def client(smollm2: RunningServer) -> Any:
    return openai.OpenAI(base_url=f"{smollm2.url}/v1", api_key="unused", timeout=300)


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
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Rome?",
        tools=[WEATHER],
        tool_choice="required",
        temperature=0.8,
        max_output_tokens=40,
    )
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
