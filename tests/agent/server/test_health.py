"""Health, readiness, metrics and client disconnects."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from agent.engines.fake import FakeBehaviour, FakeEngine, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread
from tests.support.polling import wait_until


def test_readyz_follows_empty_loading_ready(tmp_path: Path) -> None:
    runtime = ModelRuntime()
    gate = threading.Event()

    def slow_load() -> object:
        gate.wait(10)
        return fake_model(tmp_path, FakeBehaviour())

    with serve_in_thread(create_app(runtime)) as running:
        assert httpx.get(running.url + "/healthz").json() == {"status": "ok"}
        empty = httpx.get(running.url + "/readyz")
        assert empty.status_code == 503 and empty.json()["status"] == "empty"
        loader = threading.Thread(target=runtime.load_with, args=(slow_load,))
        loader.start()
        wait_until(lambda: httpx.get(running.url + "/readyz").json()["status"] == "loading")
        assert httpx.get(running.url + "/readyz").status_code == 503
        gate.set()
        loader.join()
        ready = httpx.get(running.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["model"] == "fake"


def test_no_model_answers_503_in_each_shape() -> None:
    with serve_in_thread(create_app(ModelRuntime())) as running:
        openai_style = httpx.post(
            running.url + "/v1/completions", json={"model": "x", "prompt": "hi"}
        )
        assert openai_style.status_code == 503
        assert openai_style.json()["error"]["code"] == "model_not_loaded"
        ollama_style = httpx.post(
            running.url + "/api/generate", json={"model": "x", "prompt": "hi"}
        )
        assert ollama_style.status_code == 503 and "no model" in ollama_style.json()["error"]


def test_metrics_count_tokens_and_latencies(server: RunningServer) -> None:
    httpx.post(
        server.url + "/v1/completions",
        json={"model": "fake", "prompt": "one two three", "max_tokens": 5, "stream": True},
    )
    text = httpx.get(server.url + "/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples["edgefleet_agent_generation_tokens_total"] == "5"
    assert samples["edgefleet_agent_prompt_tokens_total"] == "4"
    assert samples["edgefleet_agent_time_to_first_token_seconds_count"] == "1"
    assert samples["edgefleet_agent_inter_token_latency_seconds_count"] == "4"
    assert samples["edgefleet_agent_requests_running"] == "0"
    assert samples["edgefleet_agent_requests_waiting"] == "0"
    assert samples['edgefleet_agent_requests_total{api="openai",code="200"}'] == "1"
    assert "edgefleet_agent_model_load_seconds_count" in samples


def test_client_disconnect_cancels_the_generation(
    runtime: ModelRuntime, behaviour: FakeBehaviour
) -> None:
    behaviour.token_delay_s = 0.01
    engine = runtime.active.engine if runtime.active else None
    assert isinstance(engine, FakeEngine)
    body = {"model": "fake", "prompt": "go", "max_tokens": 2000, "stream": True}
    with serve_in_thread(create_app(runtime)) as running:
        with httpx.stream("POST", running.url + "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if '"text"' in line:
                    break  # leave after the first token: the connection closes
        wait_until(lambda: runtime.running == 0)
        metrics = httpx.get(running.url + "/metrics").text
        assert 'edgefleet_agent_generations_finished_total{reason="cancelled"} 1' in metrics
        # The slot is free again: the next request is served at once.
        after = httpx.post(
            running.url + "/v1/completions", json={"model": "fake", "prompt": "x", "max_tokens": 2}
        )
        assert after.status_code == 200
