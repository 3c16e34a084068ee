"""The OpenAI surface, driven by the real `openai` client against a real server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from agent.engines.fake import FakeBehaviour, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread
from tests.support.polling import wait_until

USER = [{"role": "user", "content": "tell me a story"}]


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_returns_text_and_usage(server: RunningServer) -> None:
    reply = client(server).chat.completions.create(model="fake", messages=USER, max_tokens=6)
    assert reply.object == "chat.completion"
    text = reply.choices[0].message.content or ""
    assert len(text.split()) == 6
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_streamed_chat_matches_the_unstreamed_text_and_ends_with_usage(
    server: RunningServer,
) -> None:
    c = client(server)
    whole = c.chat.completions.create(model="fake", messages=USER, max_tokens=8, seed=3)
    chunks = list(
        c.chat.completions.create(
            model="fake",
            messages=USER,
            max_tokens=8,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


def test_raw_sse_ends_with_done(server: RunningServer) -> None:
    body = {"model": "fake", "prompt": "a b c", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_completion_stop_string_cuts_the_text(server: RunningServer) -> None:
    c = client(server)
    full = c.completions.create(model="fake", prompt="once upon", max_tokens=6).choices[0].text
    third = full.split()[2]
    cut = c.completions.create(model="fake", prompt="once upon", max_tokens=6, stop=[third])
    assert cut.choices[0].text == full[: full.index(third)]
    assert cut.choices[0].finish_reason == "stop"


def test_models_lists_the_served_model(server: RunningServer) -> None:
    assert [m.id for m in client(server).models.list()] == ["fake"]


def test_unknown_model_is_404_in_openai_shape(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(model="gpt-4", messages=USER)
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", {"model": "fake"}, 400),
        ("POST", "/v1/chat/completions", {"model": "fake", "messages": "x"}, 400),
        ("GET", "/v1/chat/completions", None, 405),
        ("GET", "/v1/nothing-here", None, 404),
    ],
)
def test_every_error_uses_the_openai_shape(
    server: RunningServer, method: str, path: str, body: object, status: int
) -> None:
    response = httpx.request(method, server.url + path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "detail" not in response.json()


def test_prompt_over_the_context_is_400_with_the_numbers(
    server: RunningServer, behaviour: FakeBehaviour
) -> None:
    behaviour.context_length = 16
    long = [{"role": "user", "content": "word " * 40}]
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(model="fake", messages=long, max_tokens=4)
    message = str(caught.value)
    assert "context is 16 tokens" in message and "4 more were requested" in message


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    runtime = ModelRuntime(max_waiting=1)
    slow = FakeBehaviour(token_delay_s=0.02)
    runtime.load_with(lambda: fake_model(tmp_path, slow))
    body = {"model": "fake", "prompt": "x", "max_tokens": 100}
    with serve_in_thread(create_app(runtime)) as running, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, running.url + "/v1/completions", json=body, timeout=30)
        wait_until(lambda: runtime.running == 1)
        second = pool.submit(httpx.post, running.url + "/v1/completions", json=body, timeout=30)
        wait_until(lambda: runtime.waiting == 1)
        response = httpx.post(running.url + "/v1/completions", json=body)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "queue_full"
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_api_key_is_required_when_configured(runtime: ModelRuntime) -> None:
    with serve_in_thread(create_app(runtime, api_key="s3cret")) as running:
        assert httpx.get(running.url + "/healthz").status_code == 200
        denied = httpx.get(running.url + "/v1/models")
        assert denied.status_code == 401 and "API key" in denied.json()["error"]["message"]
        good = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list()] == ["fake"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=running.url + "/v1", api_key="nope", max_retries=0).models.list()
