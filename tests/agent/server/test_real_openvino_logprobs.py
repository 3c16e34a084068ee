"""Log-probabilities on SmolLM2's INT8 IR (OpenVINO's continuous batching) through the real
`openai` and `ollama` packages: each token's own, no alternatives, and a 400 naming the field
for a request that asks for alternatives."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent.server.serve import RunningServer
from tests.agent.server.conftest import serve_model

pytest.importorskip("openvino_genai")
pytest.importorskip("transformers")  # the build extra: the IR is built here
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY: Any = {"temperature": 0, "extra_body": {"repeat_penalty": 1.0}}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    from tests.support.real_openvino import smollm2_openvino

    with serve_model(smollm2_openvino(), engine="openvino", context_length=1024) as running:
        yield running


@pytest.fixture(scope="module")
def model(server: RunningServer) -> str:
    return str(httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"])


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=300)


def _check(token: str, logprob: float, top: list[Any]) -> None:
    assert logprob <= 0 and math.isfinite(logprob)
    assert token and top == []


def test_chat_gives_each_tokens_own_logprob(client: Any, model: str) -> None:
    reply = client.chat.completions.create(
        model=model, messages=ASK, max_tokens=12, logprobs=True, **GREEDY
    )
    choice = reply.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        _check(entry.token, entry.logprob, entry.top_logprobs)
        assert bytes(entry.bytes or []).decode("utf-8", "replace") == entry.token
    streamed: list[Any] = []
    for chunk in client.chat.completions.create(
        model=model, messages=ASK, max_tokens=12, logprobs=True, stream=True, **GREEDY
    ):
        for part in chunk.choices:
            streamed.extend(part.logprobs.content or [] if part.logprobs else [])
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]


ONLY_CHOSEN = "only the chosen token's log-probability"


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        (
            "/v1/chat/completions",
            {"messages": ASK, "logprobs": True, "top_logprobs": 2},
            "top_logprobs",
            ONLY_CHOSEN,
        ),
        ("/v1/completions", {"prompt": "Paris is", "logprobs": 1}, "logprobs", ONLY_CHOSEN),
        ("/v1/responses", {"input": "hi", "top_logprobs": 2}, "top_logprobs", ONLY_CHOSEN),
        (
            "/v1/completions",
            {"prompt": "Paris is", "logprobs": 0, "echo": True},
            "echo",
            "the prompt's log-probabilities",
        ),
    ],
)
def test_what_the_pipeline_cannot_give_is_refused_naming_the_field(
    server: RunningServer, model: str, path: str, body: dict[str, Any], param: str, says: str
) -> None:
    reply = httpx.post(f"{server.url}{path}", json={"model": model, **body}, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_on_engine")
    assert says in error["message"]


def test_legacy_completion_with_logprobs_zero(client: Any, model: str) -> None:
    reply = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=6, logprobs=0, temperature=0
    )
    logprobs = reply.choices[0].logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == reply.usage.completion_tokens
    assert all(v <= 0 for v in logprobs.token_logprobs)


def test_responses_include_logprobs(client: Any, model: str) -> None:
    reply = client.responses.create(
        model=model,
        input="What is the capital of France?",
        temperature=0,
        max_output_tokens=12,
        include=["message.output_text.logprobs"],
    )
    part = reply.output[0].content[0]
    assert "".join(e.token for e in part.logprobs) == part.text
    for entry in part.logprobs:
        _check(entry.token, entry.logprob, entry.top_logprobs or [])


def test_ollama_chat_logprobs(server: RunningServer, model: str) -> None:
    client = ollama.Client(host=server.url, timeout=300)
    reply = client.chat(
        model=model,
        messages=ASK,
        logprobs=True,
        options={"temperature": 0, "num_predict": 8},
    )
    entries = reply.logprobs
    assert entries and "".join(e.token for e in entries) == reply.message.content
    assert all(e.logprob <= 0 for e in entries)
