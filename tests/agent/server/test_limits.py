"""Bounded, clean inputs: body and prompt caps, surrogates, empty prompts, huge numbers, origins."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.limits import RequestLimits
from agent.server.serve import RunningServer, serve_in_thread
from tests.support.polling import wait_until

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
GENERATE = {"model": "fake", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
SURROGATE = '"\\ud800"'  # a JSON escape for a lone UTF-16 surrogate: not valid Unicode


def limited(runtime: ModelRuntime, **limits: Any) -> Iterator[RunningServer]:
    with serve_in_thread(create_app(runtime, limits=RequestLimits(**limits))) as running:
        yield running


@pytest.fixture
def small(runtime: ModelRuntime) -> Iterator[RunningServer]:
    """A server with a 2 kB body cap and a 100-character prompt cap."""
    yield from limited(runtime, max_body_bytes=2000, max_prompt_chars=100)


def openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def ollama_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return str(body["error"])


# -- body and prompt size ---------------------------------------------------------------------
def test_body_over_the_cap_gets_413_in_each_api_shape(small: RunningServer) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    error = openai_error(httpx.post(small.url + "/v1/chat/completions", json=big), 413)
    assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]
    big_generate = {**GENERATE, "prompt": "x" * 5000}
    assert "max_body_bytes" in ollama_error(
        httpx.post(small.url + "/api/generate", json=big_generate), 413
    )


def test_chunked_body_over_the_cap_gets_413(small: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fake", "prompt": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    resp = httpx.post(
        small.url + "/v1/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert openai_error(resp, 413)["code"] == "request_too_large"


def test_prompt_over_the_cap_is_refused_before_tokenizing(
    small: RunningServer, runtime: ModelRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runtime.active is not None
    engine = runtime.active.engine
    counted: list[str] = []

    def count_tokens(text: str) -> int:
        counted.append(text)
        return 1

    monkeypatch.setattr(engine, "count_tokens", count_tokens)
    long_chat = {**CHAT, "messages": [{"role": "user", "content": "y" * 60}] * 2}
    error = openai_error(httpx.post(small.url + "/v1/chat/completions", json=long_chat), 400)
    assert error["code"] == "prompt_too_large" and error["param"] == "messages"
    assert "120 characters" in error["message"] and "limit of 100" in error["message"]
    resp = httpx.post(small.url + "/api/generate", json={**GENERATE, "prompt": "z" * 101})
    assert "max_prompt_chars" in ollama_error(resp, 400)
    ollama_chat = {"model": "fake", "stream": False, "messages": long_chat["messages"]}
    resp = httpx.post(small.url + "/api/chat", json=ollama_chat)
    assert "max_prompt_chars" in ollama_error(resp, 400)
    assert counted == []


# -- surrogates, empty prompts, huge numbers ------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/chat/completions", '{"model":"fake","messages":[{"role":"user","content":%s}]}'),
        ("/v1/completions", '{"model":"fake","prompt":%s}'),
        ("/api/generate", '{"model":"fake","prompt":%s,"stream":false}'),
        ("/api/chat", '{"model":"fake","stream":false,"messages":[{"role":"user","content":%s}]}'),
        ("/api/generate", '{"model":"fake","prompt":"a","options":{"stop":[%s]}}'),
    ],
)
def test_lone_surrogate_is_a_400_and_the_connection_stays_open(
    server: RunningServer, path: str, template: str
) -> None:
    with httpx.Client(base_url=server.url) as client:
        resp = client.post(
            path, content=template % SURROGATE, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400, resp.text
        assert "surrogate" in resp.text
        assert resp.headers.get("connection") != "close"
        # The same keep-alive connection still answers.
        assert client.get("/healthz").status_code == 200
        pair = template % '"\\ud83d\\ude00"'  # a valid surrogate pair: an emoji
        ok = client.post(path, content=pair, headers={"content-type": "application/json"})
        assert ok.status_code == 200, ok.text


def test_empty_completion_prompt_is_a_400(server: RunningServer) -> None:
    for prompt in ("", [""]):
        resp = httpx.post(server.url + "/v1/completions", json={"model": "fake", "prompt": prompt})
        error = openai_error(resp, 400)
        assert error["param"] == "prompt" and "empty" in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "max_tokens": 1e308}),
        ("/v1/chat/completions", {**CHAT, "temperature": 1e308}),
        ("/v1/chat/completions", {**CHAT, "seed": 10**30}),
        ("/v1/completions", {"model": "fake", "prompt": "a", "max_tokens": 1e308}),
        ("/v1/completions", {"model": "fake", "prompt": "a", "top_k": 10**20}),
        ("/api/generate", {**GENERATE, "options": {"temperature": 1e308}}),
        ("/api/generate", {**GENERATE, "options": {"num_predict": 1e308}}),
        (
            "/api/chat",
            {
                **GENERATE,
                "prompt": None,
                "messages": CHAT["messages"],
                "options": {"repeat_penalty": 1e308},
            },
        ),
    ],
)
def test_huge_numbers_are_a_400(server: RunningServer, path: str, body: dict[str, Any]) -> None:
    resp = httpx.post(
        server.url + path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text


def test_huge_keep_alive_means_forever_and_the_unload_timer_still_works(
    server: RunningServer, runtime: ModelRuntime
) -> None:
    for keep_alive in (1e308, "1e308", "99999999999h"):
        resp = httpx.post(server.url + "/api/generate", json={**GENERATE, "keep_alive": keep_alive})
        assert resp.status_code == 200, resp.text
        assert runtime.expires_at is None and runtime.active is not None
    ps = httpx.get(server.url + "/api/ps")
    assert ps.status_code == 200 and ps.json()["models"][0]["expires_at"].startswith("2318")
    resp = httpx.post(server.url + "/api/generate", json={**GENERATE, "keep_alive": 0.2})
    assert resp.status_code == 200
    wait_until(lambda: runtime.active is None, timeout=5)


def test_nan_keep_alive_is_a_400(server: RunningServer) -> None:
    resp = httpx.post(server.url + "/api/generate", json={**GENERATE, "keep_alive": "nan"})
    assert "keep_alive" in ollama_error(resp, 400)


# -- browsers: origins and content types ---------------------------------------------------
def test_cross_origin_simple_request_cannot_unload_the_model(
    server: RunningServer, runtime: ModelRuntime
) -> None:
    body = json.dumps({"model": "fake", "keep_alive": 0})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
        resp = httpx.post(
            server.url + "/api/generate",
            content=body,
            headers={
                "content-type": content_type,
                "origin": "http://evil.example",
            },
        )
        assert "cors_origins" in ollama_error(resp, 403)
        assert "access-control-allow-origin" not in resp.headers
    resp = httpx.post(
        server.url + "/v1/completions",
        content='{"prompt": "a"}',
        headers={
            "content-type": "text/plain",
            "origin": "null",
        },
    )
    assert openai_error(resp, 403)["code"] == "origin_not_allowed"
    time.sleep(0.1)
    assert runtime.active is not None  # still loaded


def test_allowed_origin_gets_cors_headers_and_preflight(runtime: ModelRuntime) -> None:
    app = create_app(
        runtime, api_key="k3y", limits=RequestLimits(cors_origins=("http://ui.local",))
    )
    with serve_in_thread(app) as running:
        preflight = httpx.options(
            running.url + "/v1/chat/completions",
            headers={
                "origin": "http://ui.local",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://ui.local"

        def chat_from(origin: str) -> httpx.Response:
            headers = {"origin": origin, "authorization": "Bearer k3y"}
            return httpx.post(running.url + "/v1/chat/completions", json=CHAT, headers=headers)

        resp = chat_from("http://ui.local")
        assert resp.status_code == 200, resp.text
        assert resp.headers["access-control-allow-origin"] == "http://ui.local"
        assert openai_error(chat_from("http://other.local"), 403)["code"] == "origin_not_allowed"


def test_non_browser_clients_need_no_content_type(server: RunningServer) -> None:
    resp = httpx.post(
        server.url + "/api/generate",
        content=json.dumps(GENERATE),
        headers={"content-type": "text/plain"},
    )
    assert resp.status_code == 200, resp.text


def test_bad_json_is_a_400_in_the_api_shape(server: RunningServer) -> None:
    headers = {"content-type": "application/json"}
    resp = httpx.post(server.url + "/v1/chat/completions", content=b"{nope", headers=headers)
    openai_error(resp, 400)
    resp = httpx.post(server.url + "/api/chat", content=b"\xff\xfe", headers=headers)
    ollama_error(resp, 400)
