"""Fixtures: a ModelRuntime over the FakeEngine and a real uvicorn server in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.fake import FakeBehaviour, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread


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
