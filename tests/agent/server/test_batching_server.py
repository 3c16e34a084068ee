"""The HTTP API over a batching engine: concurrent streams, the bounded queue, metrics, /api/ps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.engines.base import LoadOptions
from agent.engines.fake_batching import FakeBatchBackend, FakeBatchingEngine
from agent.model_loading import LoadedModel
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread


def _loaded(path: Path, engine: FakeBatchingEngine) -> LoadedModel:
    engine.load(path, LoadOptions())
    return LoadedModel(
        name="fake", path=path, variant_id="fake", engine_name=engine.name, engine=engine
    )


@pytest.fixture
def engine() -> FakeBatchingEngine:
    return FakeBatchingEngine(FakeBatchBackend(step_delay_s=0.002), n_slots=2)


@pytest.fixture
def server(tmp_path: Path, engine: FakeBatchingEngine) -> Iterator[RunningServer]:
    runtime = ModelRuntime(max_waiting=3)
    runtime.load_with(lambda: _loaded(tmp_path / "fake.gguf", engine))
    with serve_in_thread(create_app(runtime)) as running:
        yield running
    runtime.unload()


def _body(n: int, stream: bool = True) -> dict[str, object]:
    return {
        "model": "fake",
        "stream": stream,
        "max_tokens": n,
        "temperature": 0,
        "messages": [{"role": "user", "content": "charlie delta"}],
    }


async def _stream(client: httpx.AsyncClient, url: str, n: int) -> int:
    async with client.stream("POST", f"{url}/v1/chat/completions", json=_body(n)) as reply:
        await reply.aread()
        return reply.status_code


def test_concurrent_streams_run_together_and_the_queue_stays_bounded(
    server: RunningServer, engine: FakeBatchingEngine
) -> None:
    engine.backend.gate = gate = threading.Event()  # no step finishes until the burst is in

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            tasks = [asyncio.create_task(_stream(client, server.url, 50)) for _ in range(8)]
            refused: set[asyncio.Task[int]] = set()
            while len(refused) < 3:
                done, _ = await asyncio.wait(set(tasks) - refused, return_when="FIRST_COMPLETED")
                refused |= done
            gate.set()
            return await asyncio.gather(*tasks)

    codes = asyncio.run(burst())
    # 2 slots + 3 waiting are served; the rest are told to come back (503 + Retry-After)
    assert sorted(codes) == [200] * 5 + [503] * 3
    assert max(len(step) for step in engine.backend.steps) == 2


def test_metrics_and_ps_show_the_slots(server: RunningServer) -> None:
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=_body(5, stream=False))
    assert reply.status_code == 200, reply.text
    text = httpx.get(f"{server.url}/metrics").text
    names = (
        "num_requests_running",
        "num_requests_waiting",
        "batch_size",
        "kv_cache_usage_perc",
        "prefix_cache_hits_total",
        "request_queue_time_seconds_count",
        "e2e_request_latency_seconds_count",
    )
    for name in names:
        assert f"edgefleet_agent_{name}" in text
    assert "edgefleet_agent_e2e_request_latency_seconds_count 1" in text
    ps = httpx.get(f"{server.url}/api/ps").json()["models"][0]
    assert (ps["parallel"], ps["context_length"]) == (2, 2048)
