"""Log-probabilities on SmolLM2 (llama.cpp) through the real `openai` and `ollama` packages."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.server.serve import RunningServer
from tests.agent.samples import SMOLLM2 as MODEL

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")

GREEDY: Any = {"temperature": 0, "extra_body": {"repeat_penalty": 1.0}}
ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _check_entry(token: str, logprob: float, top: list[tuple[str, float]], k: int) -> None:
    """≤ 0, top sorted, and greedy's choice is the top-1."""
    assert logprob <= 0 and math.isfinite(logprob)
    assert len(top) == k
    values = [v for _, v in top]
    assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
    assert top[0][0] == token and top[0][1] == pytest.approx(logprob, abs=1e-6)


def test_chat_logprobs_greedy_choice_is_the_top_one(smollm2_openai: Any) -> None:
    reply = smollm2_openai.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, logprobs=True, top_logprobs=5, **GREEDY
    )
    choice = reply.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries).startswith(choice.message.content.strip()[:5])
    for entry in entries:
        top = [(t.token, t.logprob) for t in entry.top_logprobs]
        _check_entry(entry.token, entry.logprob, top, 5)
        assert bytes(entry.bytes or []).decode("utf-8", "replace") == entry.token


def test_streamed_chat_chunks_carry_their_logprobs(smollm2_openai: Any) -> None:
    stream = smollm2_openai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=12,
        logprobs=True,
        top_logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    entries: list[Any] = []
    text, usage = "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.logprobs is not None:
                entries.extend(choice.logprobs.content or [])
    assert usage is not None and len(entries) == usage.completion_tokens
    for entry in entries:
        _check_entry(
            entry.token, entry.logprob, [(t.token, t.logprob) for t in entry.top_logprobs], 2
        )
    assert "".join(e.token for e in entries).strip() == text.strip()


def test_legacy_completion_logprobs_and_offsets(smollm2_openai: Any) -> None:
    prompt = "The capital of France is"
    reply = smollm2_openai.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, logprobs=3, **GREEDY
    )
    choice = reply.choices[0]
    found = choice.logprobs
    assert len(found.tokens) == len(found.token_logprobs) == len(found.text_offset) == 6
    assert choice.text == "".join(found.tokens)
    assert found.text_offset[0] == 0
    for token, logprob, top, offset in zip(
        found.tokens, found.token_logprobs, found.top_logprobs, found.text_offset, strict=True
    ):
        ranked = sorted(top.items(), key=lambda item: -item[1])
        _check_entry(token, logprob, ranked, 3)
        assert choice.text[offset : offset + len(token)] == token
    streamed = smollm2_openai.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, logprobs=0, stream=True, **GREEDY
    )
    tokens: list[str] = []
    offsets: list[int] = []
    for chunk in streamed:
        for part in chunk.choices:
            if part.logprobs is not None:
                tokens += part.logprobs.tokens or []
                offsets += part.logprobs.text_offset or []
    assert tokens == found.tokens and offsets == found.text_offset


def test_echo_scores_the_prompt_tokens_first(smollm2_openai: Any) -> None:
    """As OpenAI's echo: the prompt's tokens lead, the first with null, offsets from 0."""
    prompt = "The capital of France is"
    reply = smollm2_openai.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, logprobs=3, echo=True, **GREEDY
    )
    choice = reply.choices[0]
    found = choice.logprobs
    n = len(found.tokens) - reply.usage.completion_tokens
    assert n == reply.usage.prompt_tokens and n > 1
    assert "".join(found.tokens[:n]) == prompt and "".join(found.tokens) == choice.text
    assert (found.token_logprobs[0], found.top_logprobs[0], found.text_offset[0]) == (None, None, 0)
    for token, offset in zip(found.tokens, found.text_offset, strict=True):
        assert choice.text[offset : offset + len(token)] == token
    for logprob, top in zip(found.token_logprobs[1:n], found.top_logprobs[1:n], strict=True):
        values = sorted(top.values(), reverse=True)
        assert len(values) == 3 and logprob <= values[0] + 1e-9 and logprob <= 0
    for token, logprob, top in zip(
        found.tokens[n:], found.token_logprobs[n:], found.top_logprobs[n:], strict=True
    ):
        _check_entry(token, logprob, sorted(top.items(), key=lambda item: -item[1]), 3)


def test_a_prompt_tokens_logprob_is_the_one_it_had_when_generated(smollm2_openai: Any) -> None:
    """Scored in the prompt's prefill, a token gets the value its decode step gave it: how an
    evaluation harness scores a continuation (echo, max_tokens 1, text_offset)."""
    context = "The capital of France is"
    generated = smollm2_openai.completions.create(
        model=MODEL, prompt=context, max_tokens=3, logprobs=0, **GREEDY
    ).choices[0]
    continuation = generated.text
    scored = (
        smollm2_openai.completions.create(
            model=MODEL,
            prompt=context + continuation,
            max_tokens=1,
            logprobs=0,
            echo=True,
            **GREEDY,
        )
        .choices[0]
        .logprobs
    )
    tail = [
        (token, value)
        for token, value, offset in zip(
            scored.tokens, scored.token_logprobs, scored.text_offset, strict=True
        )
        if len(context) <= offset < len(context + continuation)
    ]
    assert [t for t, _ in tail] == generated.logprobs.tokens
    for (_, value), expected in zip(tail, generated.logprobs.token_logprobs, strict=True):
        assert value == pytest.approx(expected, abs=2e-3)


def test_batched_sequences_each_get_their_own_logprobs(smollm2_openai: Any) -> None:
    """Four at once in one batch: only those that asked get logprobs, each from its own row."""

    def ask(index: int) -> Any:
        wants = index % 2 == 0
        extra = {"logprobs": True, "top_logprobs": 1} if wants else {}
        question = ["Name a color.", "Name a fruit.", "Name a city.", "Name a tree."][index]
        return smollm2_openai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": question}],
            max_tokens=8,
            **GREEDY,
            **extra,
        )

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(4)))
    for index, reply in enumerate(replies):
        choice = reply.choices[0]
        if index % 2:
            assert choice.logprobs is None
            continue
        entries = choice.logprobs.content
        assert len(entries) == reply.usage.completion_tokens
        assert "".join(e.token for e in entries) == choice.message.content
        for e in entries:
            _check_entry(e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs], 1)


def test_ollama_generate_and_chat_logprobs(smollm2_server: RunningServer) -> None:
    client = ollama.Client(host=smollm2_server.url, timeout=300)
    options = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 6}
    reply = client.generate(
        model=MODEL, prompt="Name a color.", options=options, logprobs=True, top_logprobs=3
    )
    assert reply.logprobs is not None and len(reply.logprobs) == reply.eval_count
    for entry in reply.logprobs:
        top = [(t.token, t.logprob) for t in entry.top_logprobs or []]
        _check_entry(entry.token, entry.logprob, top, 3)
    assert "".join(e.token for e in reply.logprobs) == reply.response
    streamed = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a color."}],
        options=options,
        logprobs=True,
        stream=True,
    )
    entries: list[Any] = []
    text = ""
    for part in streamed:
        text += part.message.content or ""
        entries += part.logprobs or []
    assert "".join(e.token for e in entries) == text and entries
    assert all(e.logprob <= 0 and not e.top_logprobs for e in entries)
