"""What a chat request asks of the output: free text, JSON under a schema, or tool calls.

Shared by OpenAI chat, the Responses API and Ollama chat: the plan renders the prompt with
the tools, picks the OutputConstraint, refuses what the engine cannot do (400 naming the
field) and turns the generated text into content and tool calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field

from agent.engines.base import OutputConstraint, TokenLogprob
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.server.errors import ApiError
from agent.server.limits import RequestBody
from agent.server.logprobs import of_chunks, read_all
from agent.structured import SchemaNotEnforceable, applies_constraints, json_constraint
from agent.tool_calls import (
    CallScanner,
    Tool,
    ToolCall,
    forced_call,
    forced_call_schema,
    parse_tool_calls,
    template_messages,
)

JSON_ANY = "json"  # a schema argument meaning "any JSON object"


class FunctionFields(RequestBody):
    """A function the model may call, as both APIs declare it in `tools`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    def as_tool(self) -> Tool:
        """The domain Tool."""
        return Tool(self.name, self.description, self.parameters)


@dataclass(frozen=True)
class ChatPlan:
    """How to prompt, how to constrain, and how to read back one chat request."""

    tools: tuple[Tool, ...] = ()
    forced: bool = False  # the output is one call generated under forced_call_schema
    constraint: OutputConstraint | None = None
    constraint_field: str = ""  # the request field the constraint came from
    parallel_calls: bool = True
    call_name: str | None = None  # the one function a forced call can name, when only one can

    @classmethod
    def of(
        cls,
        *,
        tools: Sequence[Tool] = (),
        tool_choice: str = "auto",
        tools_field: str = "tools",
        schema: Mapping[str, Any] | str | None = None,
        schema_field: str = "response_format",
        parallel_calls: bool = True,
    ) -> ChatPlan:
        """The plan for these tools, tool choice ('auto', 'none', 'required' or a name) and schema.

        `schema` is a JSON schema, JSON_ANY for any JSON object, or None for free text.
        """
        if tool_choice not in ("auto", "none", "required") and tool_choice not in {
            t.name for t in tools
        }:
            raise ApiError(
                400,
                f"tool_choice names {tool_choice!r}, which is not in tools",
                param="tool_choice",
            )
        if tool_choice == "required" and not tools:
            raise ApiError(400, "tool_choice 'required' needs tools", param="tool_choice")
        if not tools or tool_choice == "none":
            return cls(constraint=_constraint(schema, schema_field), constraint_field=schema_field)
        if tool_choice == "auto":
            return cls(
                tuple(tools),
                parallel_calls=parallel_calls,
                constraint=_constraint(schema, schema_field),
                constraint_field=schema_field,
            )
        name = None if tool_choice == "required" else tool_choice
        try:
            call_schema = forced_call_schema(tools, name)
        except SchemaNotEnforceable as exc:
            raise ApiError(400, str(exc), param=tools_field) from exc
        only = name or (tools[0].name if len(tools) == 1 else None)
        constraint = json_constraint(call_schema)
        return cls(tuple(tools), True, constraint, tools_field, parallel_calls, call_name=only)

    @property
    def reads_calls(self) -> bool:
        """Whether the output may hold tool calls (streams are buffered to find them)."""
        return bool(self.tools)

    def check_engine(self, model: LoadedModel) -> None:
        """400 naming the field when the model's engine cannot apply the constraint."""
        if self.constraint is not None and not applies_constraints(model.engine):
            raise ApiError(
                400,
                f"{self.constraint_field}: the {model.engine_name} engine serving this model "
                "cannot constrain its output (structured output and forced tool calls need "
                "llama.cpp, OpenVINO, or ONNX Runtime/TensorRT with llguidance installed: "
                "pip install llguidance); leave the field out or serve a GGUF variant",
                code="unsupported_on_engine",
                param=self.constraint_field,
            )

    def render(self, model: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt: the model's template with the tools (as `tools`, or a system message)."""
        self.check_engine(model)
        if not self.tools:
            return model.chat.render(template_messages(messages, (), model.chat.template))
        shaped = template_messages(messages, self.tools, model.chat.template)
        return model.chat.render(shaped, tools=[t.as_openai() for t in self.tools])

    def scanner(self) -> CallScanner | None:
        """A stream reader for an answer that may call tools; None when it is one forced call."""
        return None if self.forced else CallScanner(self.tools)

    def trim(self, calls: list[ToolCall]) -> list[ToolCall]:
        """One call only when the request turned parallel tool calls off."""
        return calls if self.parallel_calls else calls[:1]

    async def stream(self, generation: Generation) -> AsyncIterator[str | Answer]:
        """Prose as soon as it cannot be part of a call, then the Answer (last)."""
        scanner = self.scanner()
        if scanner is None:  # one forced call: its JSON is the whole answer
            text, logprobs = await read_all(generation)
            yield Answer(*self.read(text), logprobs)
            return
        logprobs = []
        async for chunks in generation:
            logprobs.extend(of_chunks(chunks))
            text = scanner.push("".join(c.text for c in chunks))
            if text:
                yield text
        rest, calls = scanner.finish()
        yield Answer(rest, self.trim(calls), logprobs)

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """The answer's content (None when it is only calls) and its tool calls."""
        if self.forced:
            return None, [forced_call(text)]
        if not self.tools:
            return text, []
        content, calls = parse_tool_calls(text, self.tools)
        calls = self.trim(calls)
        return (content or None) if calls else text, calls


@dataclass(frozen=True)
class Answer:
    """What a streamed answer held besides the prose already sent: the rest, calls, logprobs."""

    content: str | None
    calls: list[ToolCall]
    logprobs: list[TokenLogprob]


def _constraint(schema: Mapping[str, Any] | str | None, field: str) -> OutputConstraint | None:
    if schema is None:
        return None
    try:
        return json_constraint(None if schema == JSON_ANY else schema)  # type: ignore[arg-type]
    except SchemaNotEnforceable as exc:
        raise ApiError(400, str(exc), param=field) from exc
