"""The Ollama surface, driven by the real `ollama` client against a real server."""

from __future__ import annotations

import httpx
import ollama
import pytest

from agent.engines.fake import FakeEngine
from agent.runtime import ModelRuntime
from agent.server.serve import RunningServer
from tests.support.polling import wait_until


def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_generate_not_streamed_has_the_final_fields(server: RunningServer) -> None:
    reply = client(server).generate(model="fake", prompt="hello there", options={"num_predict": 5})
    assert reply.done and reply.done_reason == "length"
    assert len(reply.response.split()) == 5
    assert reply.eval_count == 5 and (reply.prompt_eval_count or 0) > 0
    assert (reply.total_duration or 0) >= (reply.eval_duration or 0) > 0


def test_streamed_chat_ends_with_done_and_timings(server: RunningServer) -> None:
    c = client(server)
    messages = [{"role": "user", "content": "hi"}]
    opts = {"num_predict": 7, "seed": 1}
    whole = c.chat(model="fake", messages=messages, options=opts)
    parts = list(c.chat(model="fake", messages=messages, options=opts, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == 7 and parts[-1].done_reason == "length"


def test_options_stop_and_seed_are_applied(server: RunningServer) -> None:
    c = client(server)
    base = c.generate(model="fake", prompt="p", raw=True, options={"num_predict": 6}).response
    other = c.generate(model="fake", prompt="p", raw=True, options={"num_predict": 6, "seed": 5})
    assert other.response != base
    word = base.split()[3]
    stopped = c.generate(
        model="fake", prompt="p", raw=True, options={"num_predict": 6, "stop": [word]}
    )
    assert stopped.response == base[: base.index(word)] and stopped.done_reason == "stop"


def test_tags_ps_show_and_version(server: RunningServer) -> None:
    c = client(server)
    assert [m.model for m in c.list().models] == ["fake"]
    assert [m.model for m in c.ps().models] == ["fake"]
    shown = httpx.post(server.url + "/api/show", json={"model": "fake"}).json()
    assert shown["edgefleet"]["engine"] == "fake"
    assert shown["edgefleet"]["explanation"]
    assert "im_start" in (c.show("fake").template or "")
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_keep_alive_zero_unloads_and_the_next_request_reloads(
    server: RunningServer, runtime: ModelRuntime
) -> None:
    c = client(server)
    old = runtime.active
    assert old is not None and isinstance(old.engine, FakeEngine)
    c.generate(model="fake", prompt="x", options={"num_predict": 2}, keep_alive=0)
    assert runtime.active is None and c.ps().models == []
    wait_until(lambda: old.engine.loaded_path is None)
    reply = c.generate(model="fake", prompt="x", options={"num_predict": 2})
    assert reply.done and reply.load_duration is not None and reply.load_duration > 0
    assert runtime.active is not None and runtime.active is not old


def test_empty_prompt_loads_and_keep_alive_zero_unloads(
    server: RunningServer, runtime: ModelRuntime
) -> None:
    c = client(server)
    assert c.generate(model="fake", prompt="", keep_alive=0).done_reason == "unload"
    assert runtime.active is None
    assert c.generate(model="fake", prompt="").done_reason == "load"
    assert runtime.active is not None


def test_errors_use_the_ollama_shape(server: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client(server).generate(model="llama3", prompt="x")
    assert caught.value.status_code == 404 and "not found" in caught.value.error
    bad = httpx.post(server.url + "/api/generate", json={"prompt": "x"})
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    bad_keep = httpx.post(
        server.url + "/api/generate", json={"model": "fake", "prompt": "x", "keep_alive": "soon"}
    )
    assert bad_keep.status_code == 400 and "keep_alive" in bad_keep.json()["error"]
    assert httpx.get(server.url + "/api/nothing").json() == {"error": "no route GET /api/nothing"}


def test_a_json_body_sent_as_a_form_is_read_as_json(server: RunningServer) -> None:
    """`curl URL -d '{...}'`, as Ollama's docs show, sends form-urlencoded; it must still work."""
    body = '{"model": "fake", "prompt": "hi", "stream": false, "options": {"num_predict": 3}}'
    headers = {"content-type": "application/x-www-form-urlencoded"}
    reply = httpx.post(server.url + "/api/generate", content=body, headers=headers)
    assert reply.status_code == 200 and reply.json()["eval_count"] == 3
    bad = httpx.post(server.url + "/api/generate", content="{bad", headers=headers)
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
