"""End to end with the real tiny GGUF model through llama.cpp: one test per client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def real_server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    runtime = ModelRuntime()
    loaded = asyncio.run(runtime.load_model(tiny_model_dir, prefer="llamacpp"))
    assert loaded.engine_name == "llamacpp"
    with serve_in_thread(create_app(runtime)) as running:
        yield running
    runtime.unload()


def test_openai_client_streams_and_completes_with_the_real_model(
    real_server: RunningServer,
) -> None:
    c = openai.OpenAI(base_url=real_server.url + "/v1", api_key="unused", max_retries=0)
    model = c.models.list().data[0].id
    messages = [{"role": "user", "content": "Once upon a time"}]
    whole = c.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 12
    chunks = list(
        c.chat.completions.create(
            model=model, messages=messages, max_tokens=12, temperature=0, stream=True
        )
    )
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == whole.choices[0].message.content and streamed


def test_ollama_client_streams_and_generates_with_the_real_model(
    real_server: RunningServer,
) -> None:
    c = ollama.Client(host=real_server.url)
    model = c.list().models[0].model or ""
    options = {"num_predict": 12, "temperature": 0}
    whole = c.generate(model=model, prompt="The little cat", options=options)
    assert whole.done and whole.eval_count and 0 < whole.eval_count <= 12
    parts = list(
        c.chat(
            model=model,
            messages=[{"role": "user", "content": "The little cat"}],
            options=options,
            stream=True,
        )
    )
    assert parts[-1].done and parts[-1].prompt_eval_count
    assert "".join(p.message.content or "" for p in parts) == whole.response
    info = c.show(model)
    assert info.details is not None and info.details.format == "gguf"
