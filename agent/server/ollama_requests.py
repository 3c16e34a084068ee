"""Ollama request bodies: every field is applied or answered with 400 naming it (docs/agent.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field

from agent.engines.base import SamplingParams
from agent.model_loading import LoadedModel
from agent.server.chat_plan import JSON_ANY, ChatPlan, FunctionFields
from agent.server.deps import fill_context, sampling_of
from agent.server.errors import ApiError
from agent.server.limits import MAX_INT_PARAM, RequestBody
from agent.server.logprobs import MAX_TOP_LOGPROBS


class OllamaBody(RequestBody):
    """An Ollama request body: a field the agent does not know is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class Options(OllamaBody):
    """Ollama's model options: the ones the agent applies; any other is refused (400)."""

    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_INT_PARAM)
    repeat_penalty: float | None = Field(default=None, gt=0, le=100)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    num_predict: int | None = Field(default=None, le=MAX_INT_PARAM)
    stop: list[str] | None = None
    num_ctx: int | None = Field(default=None, ge=1, le=MAX_INT_PARAM)


class OllamaRequest(OllamaBody):
    """What /api/generate and /api/chat share."""

    model: str
    stream: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    think: bool | None = Field(default=None, description="refused when true")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def refuse_unsupported(self) -> None:
        """400 naming a field set to something the agent cannot honour."""
        if self.think:
            raise ApiError(
                400, "think: this agent's models do not produce separate thinking", param="think"
            )

    def logprobs_top(self) -> int | None:
        """top_logprobs (0 when not given) when logprobs is true; None otherwise (as Ollama)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def output_schema(self) -> dict[str, Any] | str | None:
        """The JSON schema `format` asks for, JSON_ANY for "json", None for free text."""
        if not self.format:
            return None
        return JSON_ANY if self.format == "json" else self.format

    def context_cap(self, model: LoadedModel) -> int | None:
        """options.num_ctx when it fits the loaded context; 400 when it is larger."""
        wanted = self.options.num_ctx if self.options else None
        loaded = model.engine.context_length
        if wanted is not None and wanted > loaded:
            raise ApiError(
                400,
                f"options.num_ctx {wanted} is larger than the {loaded} tokens "
                "this model was loaded with (the agent's context_length "
                "setting); ask for at most that",
                param="options.num_ctx",
            )
        return wanted

    @property
    def _num_predict(self) -> int | None:
        """options.num_predict when positive; None or -1 ("no limit") mean fill the context."""
        n = self.options.num_predict if self.options else None
        return n if n and n > 0 else None

    def params(self, extra_stops: tuple[str, ...]) -> SamplingParams:
        """SamplingParams for this request, the template's stop strings added."""
        return sampling_of(
            self.options or Options(),
            max_tokens=self._num_predict,
            extra_stops=extra_stops,
            logprobs=self.logprobs_top(),
        )

    def max_tokens_default(self) -> Callable[[int, int], int] | None:
        """How many tokens to allow when num_predict does not say (the rest of the context)."""
        fill = fill_context(self._num_predict)
        cap = self.options.num_ctx if self.options else None
        if fill is None or cap is None:
            return fill
        return lambda prompt, context: fill(prompt, min(context, cap))


class GenerateRequest(OllamaRequest):
    """POST /api/generate."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    images: list[str] | None = Field(default=None, description="refused unless empty")
    suffix: str | None = Field(
        default=None, description="text after the completion (models with FIM tokens)"
    )
    template: str | None = Field(default=None, description="refused unless empty")
    context: list[int] | None = Field(default=None, description="refused unless empty")

    def refuse_unsupported(self) -> None:
        """400 naming a field set to something the agent cannot honour."""
        super().refuse_unsupported()
        _refuse_images(self.images, "images")
        if self.template:
            raise ApiError(
                400,
                "template: the agent renders the model's own chat template; "
                "a per-request template is not supported",
                param="template",
            )
        if self.context:
            raise ApiError(
                400,
                "context (deprecated) is not supported; send the conversation to /api/chat instead",
                param="context",
            )


class FunctionCall(OllamaBody):
    """A function an assistant called."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class ToolCallItem(OllamaBody):
    """A tool call in an assistant message fed back."""

    function: FunctionCall


class Message(OllamaBody):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = Field(default=None, description="refused unless empty")
    tool_calls: list[ToolCallItem] | None = None
    tool_name: str | None = None
    thinking: str | None = Field(default=None, description="refused unless empty")

    def as_template_input(self) -> dict[str, Any]:
        """The message as chat templates read it (tool calls with JSON-text arguments)."""
        item: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            item["tool_calls"] = [
                {
                    "id": "",
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": json.dumps(c.function.arguments),
                    },
                }
                for c in self.tool_calls
            ]
        if self.tool_name:
            item["name"] = self.tool_name
        return item


class ToolDef(OllamaBody):
    """An entry of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionFields


class ChatRequest(OllamaRequest):
    """POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[ToolDef] | None = None

    def plan(self) -> ChatPlan:
        """Tools (the model decides whether to call) and the `format` constraint."""
        self.refuse_unsupported()
        for index, message in enumerate(self.messages):
            _refuse_images(message.images, f"messages[{index}].images")
            if message.thinking:
                raise ApiError(
                    400,
                    f"messages[{index}].thinking: this agent's models do not "
                    "think separately; send no thinking",
                    param="thinking",
                )
        tools = [t.function.as_tool() for t in self.tools or []]
        return ChatPlan.of(tools=tools, schema=self.output_schema(), schema_field="format")


def _refuse_images(images: list[str] | None, param: str) -> None:
    if images:
        raise ApiError(400, f"{param}: this model reads text only; send no images", param=param)
