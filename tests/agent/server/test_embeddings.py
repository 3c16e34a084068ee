"""Embeddings on the fake engine: OpenAI /v1/embeddings, Ollama /api/embed and /api/embeddings."""

from __future__ import annotations

import base64
import struct

import httpx
import ollama
import openai

from agent.server.serve import RunningServer


def test_openai_embeddings_batched_normalised_with_usage(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = client.embeddings.create(model="fake", input=["a cat", "a dog sat"])
    assert [d.index for d in reply.data] == [0, 1]
    for item in reply.data:
        assert abs(sum(x * x for x in item.embedding) - 1.0) < 1e-6
    assert reply.usage.prompt_tokens == 7 and reply.usage.total_tokens == 7


def test_openai_embeddings_base64(server: RunningServer) -> None:
    body = {"model": "fake", "input": "a cat", "encoding_format": "base64"}
    data = httpx.post(f"{server.url}/v1/embeddings", json=body).json()["data"][0]["embedding"]
    raw = base64.b64decode(data)
    assert len(struct.unpack(f"<{len(raw) // 4}f", raw)) == 16


def test_openai_embeddings_refuse_dimensions_and_empty_input(server: RunningServer) -> None:
    url = f"{server.url}/v1/embeddings"
    for body, param in (({"input": "x", "dimensions": 8}, "dimensions"), ({"input": []}, "input")):
        reply = httpx.post(url, json={"model": "fake", **body})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_ollama_embed_and_legacy_embeddings(server: RunningServer) -> None:
    client = ollama.Client(host=server.url)
    batch = client.embed(model="fake", input=["one", "two"])
    assert len(batch.embeddings) == 2 and batch.prompt_eval_count == 4
    legacy = client.embeddings(model="fake", prompt="one")
    assert list(legacy.embedding) == list(batch.embeddings[0])


def test_ollama_copy_then_delete_the_copy(server: RunningServer) -> None:
    client = ollama.Client(host=server.url)
    client.copy("fake", "mine")
    assert {m.model for m in client.list().models} == {"fake", "mine"}
    assert client.chat(
        model="mine", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2}
    ).message.content
    client.delete("mine")
    reply = httpx.post(f"{server.url}/api/chat", json={"model": "mine", "messages": []})
    assert reply.status_code == 404


def test_ollama_create_needs_a_gguf_file(server: RunningServer) -> None:
    reply = httpx.post(f"{server.url}/api/create", json={"model": "x", "from": "/nope.gguf"})
    assert reply.status_code == 400 and "from" in reply.json()["error"]
