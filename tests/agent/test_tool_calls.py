"""Tool calls parsed from the formats models write; tools in prompts; enforceable schemas."""

from __future__ import annotations

import json

import pytest

from agent.structured import SchemaNotEnforceable, check_schema, json_constraint
from agent.tool_calls import (
    CallScanner,
    Tool,
    forced_call,
    forced_call_schema,
    parse_tool_calls,
    template_messages,
)
from tests.agent.samples import WEATHER_DESCRIPTION, weather_called, weather_parameters

WEATHER = Tool("get_weather", WEATHER_DESCRIPTION, weather_parameters())
TIME = Tool("get_time", "The time.", {"type": "object", "properties": {}})


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        json.dumps(
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ),
    ],
    ids=["hermes", "llama31", "llama31-python-tag", "mistral", "openai-shaped"],
)
def test_each_format_gives_the_call(text: str) -> None:
    content, calls = parse_tool_calls(text, [WEATHER])
    assert content == "" and len(calls) == 1
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Oslo"}
    assert calls[0].id.startswith("call_")


def test_several_hermes_calls_and_text_around_them() -> None:
    text = (
        'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "A"}}'
        '</tool_call><tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    content, calls = parse_tool_calls(text, [WEATHER, TIME])
    assert content == "Let me check." and [c.name for c in calls] == ["get_weather", "get_time"]


def test_unknown_tools_and_prose_are_content() -> None:
    for text in ('{"name": "rm_rf", "arguments": {}}', "It is sunny.", "{not json"):
        assert parse_tool_calls(text, [WEATHER]) == (text, [])


def test_forced_call_schema_fixes_the_name_and_the_arguments() -> None:
    schema = forced_call_schema([WEATHER, TIME], "get_weather")
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == dict(WEATHER.parameters)
    assert "anyOf" in forced_call_schema([WEATHER, TIME])
    call = forced_call('{"name": "get_weather", "arguments": {"city": "Rome"}}')
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Rome"}


def test_a_template_without_tools_gets_them_in_a_system_message() -> None:
    messages = [{"role": "user", "content": "hi"}, *weather_called("Oslo")]
    shaped = template_messages(messages, [WEATHER], "{{ messages }}")
    assert shaped[0]["role"] == "system" and "get_weather" in shaped[0]["content"]
    assert shaped[2]["content"].startswith("<tool_call>") and "tool_calls" not in shaped[2]
    aware = template_messages(messages, [WEATHER], "{{ tools }}{{ m.tool_calls }}")
    assert aware[0]["role"] == "user"
    assert aware[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}


def test_schema_keywords_the_grammar_cannot_enforce_are_named() -> None:
    check_schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}})
    for schema, keyword in (
        ({"type": "integer", "minimum": 1}, "minimum"),
        ({"type": "object", "properties": {"a": {"not": {}}}}, "not"),
        ({"type": "string", "format": "email"}, "format"),
        ({"type": "array", "items": {"uniqueItems": True}}, "uniqueItems"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"type": "string", "maxLength": 10**6}, "maxLength"),
    ):
        with pytest.raises(SchemaNotEnforceable) as caught:
            json_constraint(schema)
        assert caught.value.keyword == keyword
    assert json_constraint(None).schema is None


def _scan(pieces: list[str]) -> tuple[list[str], str, list[str]]:
    scanner = CallScanner([WEATHER])
    sent = [out for p in pieces if (out := scanner.push(p))]
    rest, calls = scanner.finish()
    return sent, rest, [c.name for c in calls]


def test_scanner_streams_prose_and_keeps_a_later_call() -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "A"}}</tool_call>'
    sent, rest, calls = _scan(["Let me ", "check. <tool", "_call>", call[11:]])
    assert "".join(sent) == "Let me check. " and rest == "" and calls == ["get_weather"]


def test_scanner_holds_an_answer_that_starts_like_a_call() -> None:
    for pieces in (
        ['{"name": "get_weather", ', '"parameters": {"city": "A"}}'],
        ["[TOOL", '_CALLS] [{"name": "get_weather", "arguments": {}}]'],
    ):
        sent, _, calls = _scan(pieces)
        assert sent == [] and calls == ["get_weather"]


def test_scanner_gives_back_prose_it_held() -> None:
    sent, rest, calls = _scan(["[1] first", " point"])
    assert sent == [] and rest == "[1] first point" and calls == []
    sent, rest, calls = _scan(["plain ", "answer <", "b>"])
    assert "".join(sent) + rest == "plain answer <b>" and calls == []
