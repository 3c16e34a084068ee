"""OpenAI request bodies: every field is applied or answered with 400 naming it (docs/agent.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from agent.engines.base import SamplingParams
from agent.server.chat_plan import JSON_ANY, ChatPlan, FunctionFields
from agent.server.deps import sampling_of
from agent.server.errors import ApiError
from agent.server.limits import MAX_INT_PARAM, RequestBody
from agent.server.logprobs import MAX_TOP_LOGPROBS
from agent.tool_calls import Tool


class OpenAIBody(RequestBody):
    """An OpenAI request body: a field the agent does not know is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ContentPart(OpenAIBody):
    """One part of a multi-part message; only text is supported."""

    type: str
    text: str | None = None


class FunctionCall(OpenAIBody):
    """The function an assistant called, arguments as JSON text."""

    name: str
    arguments: str = "{}"


class ToolCallItem(OpenAIBody):
    """A tool call in an assistant message fed back."""

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIBody):
    """One message of the conversation."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = None
    tool_call_id: str | None = None

    def as_template_input(self) -> dict[str, Any]:
        """`{"role", "content"}` (plus tool calls or the call answered) with text parts joined."""
        content = self.content
        if isinstance(content, list):
            if any(p.type not in ("text", "input_text", "output_text") for p in content):
                raise ApiError(
                    400,
                    "this model reads text only: messages[].content parts must be of type 'text'",
                    param="messages",
                )
            content = "".join(p.text or "" for p in content)
        role = "system" if self.role == "developer" else self.role
        item: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:
            item["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            item["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            item["name"] = self.name
        return item


class FunctionDef(FunctionFields):
    """A function the model may call (`strict`: its arguments always follow the schema)."""

    strict: bool | None = None


class ToolDef(OpenAIBody):
    """An entry of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionDef

    def as_tool(self) -> Tool:
        """The domain Tool."""
        return self.function.as_tool()


class NamedFunction(OpenAIBody):
    """`{"name": ...}` of a named tool choice."""

    name: str


class NamedToolChoice(OpenAIBody):
    """`{"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(OpenAIBody):
    """`response_format.json_schema`."""

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBody):
    """`response_format`: text, any JSON object, or JSON under a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def output_schema(self) -> dict[str, Any] | str | None:
        """The schema the output must match, JSON_ANY, or None for free text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return JSON_ANY
        if self.json_schema is None:
            raise ApiError(
                400,
                "response_format of type json_schema needs json_schema",
                param="response_format.json_schema",
            )
        return self.json_schema.schema_ or JSON_ANY


class StreamOptions(OpenAIBody):
    """Options for streamed responses."""

    include_usage: bool = False


class SamplingFields(OpenAIBody):
    """Fields both endpoints share (OpenAI's, plus llama.cpp's top_k and repeat_penalty)."""

    model: str = ""
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT_PARAM)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_INT_PARAM)
    repeat_penalty: float | None = Field(default=None, gt=0, le=100)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=MAX_INT_PARAM)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, description="only 0 (refused else)")
    frequency_penalty: float | None = Field(default=None, description="only 0 (refused else)")
    logit_bias: dict[str, float] | None = Field(default=None, description="refused unless empty")
    user: str | None = None

    def refuse_unsupported(self) -> None:
        """400 naming the first field set to something the agent cannot honour."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(
                    400,
                    f"{name} is not supported by this agent's engines; leave it out or send 0",
                    param=name,
                )
        if self.logit_bias:
            raise ApiError(400, "logit_bias is not supported by this agent", param="logit_bias")

    def logprobs_top(self) -> int | None:
        """How many alternatives each token's log-probabilities list; None: none asked."""
        return None

    def params(self, max_tokens: int | None, extra_stops: tuple[str, ...]) -> SamplingParams:
        """SamplingParams for this request."""
        return sampling_of(
            self, max_tokens=max_tokens, extra_stops=extra_stops, logprobs=self.logprobs_top()
        )


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT_PARAM)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    modalities: list[Literal["text"]] | None = None

    def logprobs_top(self) -> int | None:
        """top_logprobs (0 when not given) when logprobs is true; None otherwise."""
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def plan(self) -> ChatPlan:
        """The output plan for tools, tool_choice and response_format."""
        self.refuse_unsupported()
        self.logprobs_top()
        choice = self.tool_choice or "auto"
        named = choice.function.name if isinstance(choice, NamedToolChoice) else choice
        return ChatPlan.of(
            tools=[t.as_tool() for t in self.tools or []],
            tool_choice=named,
            schema=self.response_format.output_schema() if self.response_format else None,
            parallel_calls=self.parallel_tool_calls is not False,
        )


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] = Field(description="one non-empty prompt (a list of exactly one)")
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_INT_PARAM)
    echo: bool = False
    suffix: str | None = Field(
        default=None, description="text after the completion (models with FIM tokens)"
    )
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def logprobs_top(self) -> int | None:
        """`logprobs`: the alternatives listed per token (0: the chosen token's only)."""
        return self.logprobs


class EmbeddingRequest(OpenAIBody):
    """POST /v1/embeddings."""

    model: str = ""
    input: str | list[str] = Field(description="a text or a list of texts (token arrays: 400)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="refused unless null")
    user: str | None = None
