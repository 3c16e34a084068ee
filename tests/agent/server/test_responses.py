"""The Responses API over HTTP and WebSocket with the real `openai` SDK, on the fake engine."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from agent.engines.fake import FakeBehaviour
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.limits import RequestLimits
from agent.server.responses_items import ForcedCallReader
from agent.server.serve import RunningServer, serve_in_thread
from tests.agent.samples import weather_response_tool

pytest.importorskip("websockets")
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402
from websockets.typing import Origin  # noqa: E402

WEATHER: Any = weather_response_tool()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_text_input_with_instructions(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="fake", input="hello", instructions="Be brief.", max_output_tokens=5
    )
    assert reply.status == "incomplete" and reply.output_text
    assert reply.usage is not None and reply.usage.output_tokens == 5


def test_message_input_and_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="fake", input=[{"role": "user", "content": "hi"}], max_output_tokens=3
    )
    second = client.responses.create(
        model="fake", input="and then?", previous_response_id=first.id, max_output_tokens=3
    )
    assert second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens


def test_unknown_previous_response_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="fake", input="x", previous_response_id="resp_nope")
    assert caught.value.body["param"] == "previous_response_id"


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reply = client.responses.create(
        model="fake",
        input="count",
        text={"format": {"type": "json_schema", "name": "c", "schema": schema}},
    )
    assert json.loads(reply.output_text) == {"n": 1}


def test_required_tool_call_and_its_output_fed_back(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="fake", input="weather in Oslo?", tools=[WEATHER], tool_choice="required"
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    follow = client.responses.create(
        model="fake",
        previous_response_id=first.id,
        max_output_tokens=4,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert follow.output_text


def test_streaming_events_as_the_sdk_expects(client: openai.OpenAI) -> None:
    kinds, text = [], ""
    fmt: Any = {"format": {"type": "json_object"}}
    with client.responses.stream(model="fake", input="stream", text=fmt) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.done" in kinds and final.output_text == text


def test_a_truncated_stream_ends_incomplete(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model="fake", input="x", max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_websocket_mode_several_turns_on_one_socket(client: openai.OpenAI) -> None:
    with client.responses.connect() as connection:
        ids = []
        for prompt in ("one", "two"):
            connection.response.create(
                model="fake",
                input=prompt,
                max_output_tokens=3,
                previous_response_id=ids[-1] if ids else None,
            )  # type: ignore[arg-type]
            for event in connection:
                if event.type in ("response.completed", "response.incomplete"):
                    ids.append(event.response.id)
                    assert event.response.output_text
                    break
                assert event.type != "error", event
    assert len(ids) == 2 and ids[0] != ids[1]


def test_websocket_error_event_keeps_the_socket(client: openai.OpenAI) -> None:
    with client.responses.connect() as connection:
        connection.response.create(model="fake", input="x", previous_response_id="resp_nope")
        error = next(iter(connection))
        assert error.type == "error"
        connection.response.create(model="fake", input="x", max_output_tokens=2)
        kinds = [e.type for e in _until_done(connection)]
        assert kinds[-1] == "response.incomplete"


def _until_done(connection: Any) -> list[Any]:
    events = []
    for event in connection:
        events.append(event)
        if event.type in ("response.completed", "response.incomplete", "error"):
            return events
    return events


def test_unsupported_fields_are_refused(server: RunningServer) -> None:
    for extra, param in (
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
    ):
        reply = httpx.post(f"{server.url}/v1/responses", json={"input": "x", **extra})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_websocket_mode_needs_the_api_key(runtime: ModelRuntime) -> None:
    with serve_in_thread(create_app(runtime, api_key="sesame")) as running:
        wrong = openai.OpenAI(base_url=f"{running.url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(InvalidStatus), wrong.responses.connect(max_retries=0) as connection:
            connection.response.create(model="fake", input="x", max_output_tokens=2)
            next(iter(connection))
        right = openai.OpenAI(base_url=f"{running.url}/v1", api_key="sesame", max_retries=0)
        with right.responses.connect() as connection:
            connection.response.create(model="fake", input="x", max_output_tokens=2)
            assert _until_done(connection)[-1].type == "response.incomplete"


def test_browser_origins_follow_cors_origins(runtime: ModelRuntime) -> None:
    limits = RequestLimits(cors_origins=("http://app.example",))
    with serve_in_thread(create_app(runtime, limits=limits)) as running:
        preflight = httpx.options(
            f"{running.url}/v1/responses",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        blocked = httpx.post(
            f"{running.url}/v1/embeddings",
            json={"input": "x"},
            headers={"Origin": "http://evil.example"},
        )
        assert blocked.status_code == 403
        socket_url = running.url.replace("http", "ws") + "/v1/responses"
        with pytest.raises(InvalidStatus):
            connect(socket_url, origin=Origin("http://evil.example")).close()
        connect(socket_url, origin=Origin("http://app.example")).close()


def test_closing_the_socket_cancels_the_generation(
    client: openai.OpenAI, runtime: ModelRuntime, behaviour: FakeBehaviour
) -> None:
    behaviour.token_delay_s = 0.05  # 1000 tokens would take 50 s
    with client.responses.connect() as connection:
        connection.response.create(model="fake", input="long", max_output_tokens=1000)
        for event in connection:
            if event.type == "response.output_text.delta":
                break
    deadline = time.monotonic() + 10
    while runtime.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.running == 0


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "a}b\\"{", "n": [1, {"x": 2}]}}',
        '{"arguments":{"city":"a}b\\"{","n":[1,{"x":2}]},"name":"get_weather"}',
    ],
)
def test_a_forced_call_is_read_piece_by_piece_in_either_order(text: str) -> None:
    reader = ForcedCallReader()
    seen = [reader.arguments]
    for char in text:
        reader.push(char)
        assert reader.arguments.startswith(seen[-1])  # only ever grows: safe to stream
        seen.append(reader.arguments)
    assert reader.complete and reader.name == "get_weather"
    assert json.loads(reader.arguments) == {"city": 'a}b"{', "n": [1, {"x": 2}]}
