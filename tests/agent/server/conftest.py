"""Fixtures: the fake engine, real GGUFs on llama.cpp, and a real uvicorn server in a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.engines.base import LoadOptions
from agent.engines.fake import FakeBehaviour, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread
from hwprobe.profile import HardwareProfile


@pytest.fixture
def behaviour() -> FakeBehaviour:
    """The fake engine's knobs; a test may change them before the first request."""
    return FakeBehaviour()


@pytest.fixture
def runtime(tmp_path: Path, behaviour: FakeBehaviour) -> ModelRuntime:
    """A runtime with the fake model active."""
    rt = ModelRuntime(max_waiting=4)
    rt.load_with(lambda: fake_model(tmp_path / "fake.gguf", behaviour))
    return rt


@pytest.fixture
def server(runtime: ModelRuntime) -> Iterator[RunningServer]:
    """A real uvicorn server on a free port serving `runtime`."""
    with serve_in_thread(create_app(runtime)) as running:
        yield running


@contextmanager
def serve_model(
    path: Path, *, context_length: int = 2048, parallel: int = 4, engine: str = "llamacpp"
) -> Iterator[RunningServer]:
    """A real model (a .gguf or a model directory) on `engine` (llama.cpp unless told), 2
    threads, on the CPU, served in a thread."""
    pytest.importorskip({"llamacpp": "llama_cpp", "openvino": "openvino_genai"}[engine])
    runtime = ModelRuntime()
    options = LoadOptions(context_length=context_length, threads=2, parallel=parallel)
    profile = HardwareProfile(device_class="cpu-x86", engines=[engine])
    asyncio.run(
        runtime.load_model(
            path, profile=profile, installed={engine: "test"}, prefer=engine, options=options
        )
    )
    try:
        with serve_in_thread(create_app(runtime)) as running:
            yield running
    finally:
        assert runtime.known is not None
        runtime.known.engine.unload()  # here, not in a background thread the exit could cut


@pytest.fixture(scope="session")
def smollm2_server(smollm2_gguf: Path) -> Iterator[RunningServer]:
    """SmolLM2-135M-Instruct, four 2048-token slots (concurrent tests run in one batch)."""
    with serve_model(smollm2_gguf) as running:
        yield running


@pytest.fixture(scope="session")
def gemma3_server(gemma3_gguf: Path) -> Iterator[RunningServer]:
    """Gemma 3 270M base (no chat template), one 1024-token slot."""
    with serve_model(gemma3_gguf, context_length=1024, parallel=1) as running:
        yield running


@pytest.fixture(scope="session")
def smollm2_openai(smollm2_server: RunningServer) -> Any:
    """The real `openai` SDK pointed at the SmolLM2 server."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{smollm2_server.url}/v1", api_key="unused", timeout=300)
