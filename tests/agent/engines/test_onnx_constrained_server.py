"""Structured output and forced tool calls on ONNX Runtime through the real `openai` SDK."""

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
from tests.agent.engines.test_kvloop_constrained import PERSON, WEATHER

pytest.importorskip("llguidance")
pytest.importorskip("onnxruntime")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

ORT_ONLY = HardwareProfile(device_class="cpu-x86", engines=["onnxruntime"])


@pytest.fixture(scope="module")
def onnx_server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    runtime = ModelRuntime()
    loaded = asyncio.run(
        runtime.load_model(
            tiny_model_dir,
            profile=ORT_ONLY,
            installed={"onnxruntime": "t"},
            prefer="onnxruntime",
            options=LoadOptions(context_length=512, threads=2),
        )
    )
    assert loaded.engine_name == "onnxruntime"
    with serve_in_thread(create_app(runtime)) as running:
        yield running
    loaded.engine.unload()


def test_openai_json_schema_and_forced_call_on_onnx(onnx_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{onnx_server.url}/v1", api_key="unused", timeout=120)
    model = client.models.list().data[0].id
    messages: Any = [{"role": "user", "content": "Describe a person."}]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    validator = jsonschema_rs.validator_for(PERSON)
    for seed in range(5):
        answer = client.chat.completions.create(
            model=model,
            messages=messages,
            response_format=fmt,
            temperature=0.8,
            seed=seed,
            max_tokens=200,
        )
        validator.validate(json.loads(answer.choices[0].message.content or ""))
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER.as_openai()],
        tool_choice="required",
        temperature=0.8,
        max_tokens=130,  # the tiny model's context is 512 and the tool prompt is long
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema_rs.validator_for(dict(WEATHER.parameters)).validate(arguments)


def test_responses_text_format_on_onnx(onnx_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{onnx_server.url}/v1", api_key="unused", timeout=120)
    model = client.models.list().data[0].id
    response = client.responses.create(
        model=model,
        input="Describe a person.",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
        temperature=0.8,
        max_output_tokens=200,
    )
    jsonschema_rs.validator_for(PERSON).validate(json.loads(response.output_text))


def test_ollama_format_schema_on_onnx(onnx_server: RunningServer) -> None:
    client = ollama.Client(host=onnx_server.url, timeout=120)
    model = client.list().models[0].model
    answer = client.chat(
        model=model,
        messages=[{"role": "user", "content": "Describe a person."}],
        format=PERSON,
        options={"temperature": 0.8, "num_predict": 200},
    )
    jsonschema_rs.validator_for(PERSON).validate(json.loads(answer.message.content or ""))
