"""The Responses API request: input items into chat messages, tools and text.format into a plan."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from agent.server.chat_plan import JSON_ANY, ChatPlan
from agent.server.errors import ApiError
from agent.server.limits import MAX_INT_PARAM
from agent.server.logprobs import MAX_TOP_LOGPROBS
from agent.server.openai_requests import OpenAIBody
from agent.tool_calls import Tool

_TEXT_PARTS = ("input_text", "output_text", "text")
LOGPROBS_INCLUDE = "message.output_text.logprobs"


class FunctionTool(OpenAIBody):
    """A function tool, in the Responses API's flat shape."""

    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(OpenAIBody):
    """`{"type": "function", "name": ...}` of a named tool choice."""

    type: Literal["function"] = "function"
    name: str


class TextFormat(OpenAIBody):
    """`text.format`: text, any JSON object, or JSON under a schema."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(OpenAIBody):
    """`text`."""

    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = Field(default=None, description="only medium")


class ResponsesRequest(OpenAIBody):
    """POST /v1/responses, and the body of a WebSocket `response.create` event."""

    model: str = ""
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_INT_PARAM)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled"] | None = Field(default=None, description="only disabled")
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = Field(default=None, description=f"only {LOGPROBS_INCLUDE}")

    def logprobs_top(self) -> int | None:
        """Alternatives listed per token (0 with `include` alone); None: no log-probabilities."""
        others = [name for name in self.include or [] if name != LOGPROBS_INCLUDE]
        if others:
            raise ApiError(
                400,
                f"include: {others[0]!r} is not supported by this agent "
                f"(only {LOGPROBS_INCLUDE!r} is)",
                param="include",
            )
        if self.top_logprobs is None and not self.include:
            return None
        return self.top_logprobs or 0

    def logprobs_param(self) -> str:
        """The field that asked for log-probabilities, to name in a refusal."""
        return "top_logprobs" if self.top_logprobs is not None else "include"

    def plan(self) -> ChatPlan:
        """The output plan for tools, tool_choice and text.format."""
        choice = self.tool_choice or "auto"
        named = choice.name if isinstance(choice, NamedFunction) else choice
        tools = [
            Tool(t.name, t.description or "", t.parameters or {"type": "object"})
            for t in self.tools or []
        ]
        return ChatPlan.of(
            tools=tools,
            tool_choice=named,
            schema=self._schema(),
            schema_field="text.format",
            parallel_calls=self.parallel_tool_calls is not False,
        )

    def _schema(self) -> dict[str, Any] | str | None:
        fmt = self.text.format if self.text else None
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return JSON_ANY
        return fmt.schema_ or JSON_ANY

    def messages(self) -> list[dict[str, Any]]:
        """The new turn's chat messages: instructions as system, then the input items."""
        turn: list[dict[str, Any]] = []
        if self.instructions:
            turn.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            if self.input:
                turn.append({"role": "user", "content": self.input})
            return turn
        for index, item in enumerate(self.input):
            _append_item(turn, item, f"input[{index}]")
        return turn


def _append_item(turn: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise ApiError(
                400,
                f"{where}.role must be user, assistant, system or developer",
                param=f"{where}.role",
            )
        text = _text(item.get("content", ""), f"{where}.content")
        turn.append({"role": "system" if role == "developer" else role, "content": text})
    elif kind == "function_call":
        call = {
            "id": str(item.get("call_id", "")),
            "type": "function",
            "function": {
                "name": str(item.get("name", "")),
                "arguments": str(item.get("arguments", "{}")),
            },
        }
        last = turn[-1] if turn else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            turn.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output", "")
        text = output if isinstance(output, str) else json.dumps(output)
        turn.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": text})
    else:
        raise ApiError(
            400,
            f"{where}: input items of type {kind!r} are not supported by this "
            "agent (message, function_call and function_call_output are)",
            param=f"{where}.type",
        )


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be text or a list of parts", param=where)
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
            raise ApiError(
                400, f"{where}: this model reads text only (input_text parts)", param=where
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)
