"""Real GGUFs through the real HTTP API: each model's own chat template, stop tokens, fallback.

SmolLM2-135M-Instruct carries a ChatML template in its metadata; Gemma 3 270M is a base model
with none, so chat falls back to a named template chosen from its vocabulary.
"""

from __future__ import annotations

import httpx
import pytest

from agent.server.serve import RunningServer

pytest.importorskip("llama_cpp")

GREEDY = {"temperature": 0, "seed": 1}


def _model(server: RunningServer) -> str:
    return str(httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"])


def test_smollm2_answers_with_its_own_template_and_stops_at_im_end(
    smollm2_server: RunningServer,
) -> None:
    # With its template's default system prompt this 4-bit 135M model rambles greedily
    # ("L'Étoile, la Cité, ..."); a plain system prompt gets the plain answer.
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    body = {"model": _model(smollm2_server), "max_tokens": 48, **GREEDY, "messages": messages}
    reply = httpx.post(f"{smollm2_server.url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    content = choice["message"]["content"]
    assert "Paris" in content and "<|im_end|>" not in content and "<|im_start|>" not in content
    assert choice["finish_reason"] == "stop"
    assert reply.headers["X-EdgeFleet-Chat-Template"] == "model (gguf)"
    assert reply.json()["usage"]["completion_tokens"] < 48


def test_smollm2_show_reports_the_gguf_template(smollm2_server: RunningServer) -> None:
    shown = httpx.post(f"{smollm2_server.url}/api/show", json={"model": _model(smollm2_server)})
    info = shown.json()
    assert "You are a helpful AI assistant named SmolLM" in info["template"]
    assert info["details"]["chat_template"] == "model (gguf)"
    assert info["edgefleet"]["chat_template"]["fallback"] is False
    assert "<|im_end|>" in info["edgefleet"]["chat_template"]["stop"]
    assert info["edgefleet"]["device"] == "CPU"


def test_gemma3_base_completes_text(gemma3_server: RunningServer) -> None:
    body = {
        "model": _model(gemma3_server),
        "prompt": "Water is made of hydrogen and",
        "max_tokens": 4,
        **GREEDY,
    }
    reply = httpx.post(f"{gemma3_server.url}/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"].startswith(" oxygen")
    # No template of its own: /api/generate completes the prompt raw, as Ollama does.
    generate = {
        "model": body["model"],
        "prompt": body["prompt"],
        "stream": False,
        "options": {"num_predict": 4, **GREEDY},
    }
    answered = httpx.post(f"{gemma3_server.url}/api/generate", json=generate, timeout=120)
    assert answered.status_code == 200, answered.text
    assert answered.json()["response"].startswith(" oxygen")


def test_gemma3_chat_uses_the_named_fallback_and_show_says_so(
    gemma3_server: RunningServer,
) -> None:
    model = _model(gemma3_server)
    body = {
        "model": model,
        "max_tokens": 16,
        **GREEDY,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    reply = httpx.post(f"{gemma3_server.url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    content = reply.json()["choices"][0]["message"]["content"]
    assert "<end_of_turn>" not in content and "<start_of_turn>" not in content
    assert reply.headers["X-EdgeFleet-Chat-Template"] == "fallback: gemma"
    ollama = {
        "model": model,
        "stream": False,
        "options": {"num_predict": 8, **GREEDY},
        "messages": body["messages"],
    }
    answered = httpx.post(f"{gemma3_server.url}/api/chat", json=ollama, timeout=120)
    assert answered.status_code == 200 and answered.json()["done"] is True
    assert answered.headers["X-EdgeFleet-Chat-Template"] == "fallback: gemma"
    info = httpx.post(f"{gemma3_server.url}/api/show", json={"model": model}).json()
    assert info["details"]["chat_template"] == "fallback: gemma"
    assert "<start_of_turn>" in info["template"]
    described = info["edgefleet"]["chat_template"]
    assert described["fallback"] is True and "no chat template" in described["description"]
    assert "<end_of_turn>" in described["stop"]
