"""Tool calls: tools into the prompt, a forced call's schema, and calls parsed from model text.

Models write calls in their own format: Hermes/Qwen `<tool_call>{...}</tool_call>`, Llama 3.1
a bare JSON object (`{"name": ..., "parameters": ...}`, maybe after `<|python_tag|>`), Mistral
`[TOOL_CALLS] [{...}]`. A required or named call is generated under a JSON schema instead
(`{"name": <a tool>, "arguments": <its parameters>}`), so it always parses and validates.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.structured import check_schema

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_MISTRAL = "[TOOL_CALLS]"
_PYTHON_TAG = "<|python_tag|>"
# Templates that know about tools read `tools`; others get the tools in a system message.
_TOOLS_SYSTEM = (
    "You may call functions to help answer. The functions, as JSON schemas:\n{tools}\n"
    'To call one, answer only with <tool_call>{{"name": <function name>, "arguments": '
    "<arguments object>}}</tool_call>."
)


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def as_openai(self) -> dict[str, Any]:
        """`{"type": "function", "function": {...}}`, the shape chat templates expect."""
        function = {
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """The OpenAI chat `tool_calls` item."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}

    def as_ollama(self) -> dict[str, Any]:
        """The Ollama `tool_calls` item (arguments as an object)."""
        return {"function": {"name": self.name, "arguments": json.loads(self.arguments)}}


def new_call_id() -> str:
    """An id for a tool call, unique enough to match results to calls."""
    return f"call_{uuid.uuid4().hex[:24]}"


def forced_call_schema(tools: Sequence[Tool], name: str | None = None) -> dict[str, Any]:
    """The schema of a call to `name` (or any of `tools`): name fixed, arguments per schema."""
    chosen = [t for t in tools if name is None or t.name == name]
    options = []
    for tool in chosen:
        check_schema(tool.parameters, f"tools[{tool.name}].function.parameters")
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": dict(tool.parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_call(text: str) -> ToolCall:
    """The call in text generated under forced_call_schema."""
    value = json.loads(text)
    return ToolCall(new_call_id(), str(value["name"]), json.dumps(value["arguments"]))


def parse_tool_calls(text: str, tools: Sequence[Tool]) -> tuple[str, list[ToolCall]]:
    """The text without its calls, and the calls to known tools it holds (any format)."""
    known = {t.name for t in tools}
    stripped = text.strip()
    if "<tool_call>" in stripped:
        calls = [c for m in _HERMES.findall(stripped) for c in _calls(m, known)]
        if calls:
            return _HERMES.sub("", stripped).strip(), calls
    if _MISTRAL in stripped:
        before, _, after = stripped.partition(_MISTRAL)
        calls = _calls(after, known)
        if calls:
            return before.strip(), calls
    body = stripped.removeprefix(_PYTHON_TAG).strip()
    if body.startswith(("{", "[")):
        calls = _calls(body, known)
        if calls:
            return "", calls
    return text, []


def _calls(text: str, known: set[str]) -> list[ToolCall]:
    """Calls in one JSON object or list of objects; [] when it is not that."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return []
        nested = item.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else item
        name = function.get("name")
        args = function.get("arguments", function.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return []
        if name not in known or not isinstance(args, dict):
            return []
        calls.append(ToolCall(new_call_id(), str(name), json.dumps(args)))
    return calls


def template_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool], template: str
) -> list[dict[str, Any]]:
    """Messages as the template reads them; tools in a system message if it ignores `tools`.

    A template that never mentions `tool_calls` sees an assistant's calls as Hermes text.
    """
    knows_calls = "tool_calls" in template
    result: list[dict[str, Any]] = []
    for message in messages:
        item = dict(message)
        calls = item.get("tool_calls")
        if calls and not knows_calls:
            text = "".join(
                "<tool_call>"
                + json.dumps(
                    {
                        "name": c["function"]["name"],
                        "arguments": _loaded(c["function"]["arguments"]),
                    }
                )
                + "</tool_call>"
                for c in calls
            )
            item["content"] = ((item.get("content") or "") + text).strip()
            item.pop("tool_calls")
        elif calls:
            item["tool_calls"] = [_with_object_args(c) for c in calls]
        if item.get("content") is None:
            item["content"] = ""
        result.append(item)
    if tools and "tools" not in template:
        listing = "\n".join(json.dumps(t.as_openai()["function"]) for t in tools)
        note = _TOOLS_SYSTEM.format(tools=listing)
        if result and result[0].get("role") == "system":
            result[0] = {**result[0], "content": f"{result[0]['content']}\n\n{note}"}
        else:
            result.insert(0, {"role": "system", "content": note})
    return result


def _loaded(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def _with_object_args(call: Mapping[str, Any]) -> dict[str, Any]:
    # HF templates write `arguments | tojson` or iterate it: they expect an object.
    function = dict(call.get("function", {}))
    function["arguments"] = _loaded(function.get("arguments", {}))
    return {**call, "function": function}


# What a tool call may start with: content before it can be streamed, the call cannot.
_CALL_MARKERS = ("<tool_call>", _MISTRAL, _PYTHON_TAG)
_CALL_STARTS = (*_CALL_MARKERS, "{", "[")


class CallScanner:
    """Streams the text that cannot be part of a tool call; the rest waits for `finish`.

    An answer that starts like a call (a marker, or JSON for Llama 3.1's bare format) is held
    whole; prose is released as it comes, up to a marker that appears later (and a tail that
    may be the start of one).
    """

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools = tools
        self._text = ""
        self._sent = 0  # characters released as content
        self._holding = False  # a call may have begun at _sent: release nothing more

    def push(self, piece: str) -> str:
        """Content safe to send now (may be empty)."""
        self._text += piece
        if self._holding:
            return ""
        if self._sent == 0:
            head = self._text.lstrip()
            if not head or any(m.startswith(head) for m in _CALL_STARTS):
                return ""  # nothing yet, or maybe a call's first characters
            if head.startswith(_CALL_STARTS):
                self._holding = True
                return ""
        found = [i for m in _CALL_MARKERS if (i := self._text.find(m, self._sent)) >= 0]
        if found:
            return self._release(min(found), holding=True)
        keep = next(
            (
                n
                for n in range(min(len(self._text), 16), 0, -1)
                if any(m.startswith(self._text[-n:]) for m in _CALL_MARKERS)
            ),
            0,
        )
        return self._release(len(self._text) - keep, holding=False)

    def _release(self, end: int, *, holding: bool) -> str:
        out = self._text[self._sent : end]
        self._sent, self._holding = max(self._sent, end), holding
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The content not yet sent and the calls, once the answer is complete."""
        rest = self._text[self._sent :]
        content, calls = parse_tool_calls(rest, self._tools)
        return (content, calls) if calls else (rest, [])
