"""Ollama-compatible generation routes: /api/generate and /api/chat (models: ollama_models)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.runtime import LoadedModel, ModelRuntime
from agent.server.chat_plan import JSON_ANY, ChatPlan
from agent.server.deps import (
    LimitsDep,
    RuntimeDep,
    fill_context,
    keep_alive_seconds,
    nonempty_prompt,
    sampling,
    stop_tuple,
)
from agent.server.deps import served_model as _served
from agent.server.errors import ApiError, from_agent_error
from agent.server.limits import MAX_INT_PARAM, RequestBody
from agent.server.streaming import TEXT_SLOT, TokenStreamResponse, text_event, until_disconnect
from agent.tool_calls import Tool

router = APIRouter(prefix="/api", tags=["ollama"])


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


class _Request(OllamaBody):
    model: str
    stream: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    think: bool | None = Field(default=None, description="refused when true")

    def refuse_unsupported(self) -> None:
        """400 naming a field set to something the agent cannot honour."""
        if self.think:
            raise ApiError(400, "think: this agent's models do not produce separate thinking",
                           param="think")  # fmt: skip

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
        o = self.options or Options()
        return sampling(
            max_tokens=self._num_predict,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            repeat_penalty=o.repeat_penalty,
            seed=o.seed,
            stop=stop_tuple(o.stop, extra_stops),
        )

    def max_tokens_default(self) -> Callable[[int, int], int] | None:
        """How many tokens to allow when num_predict does not say (the rest of the context)."""
        fill = fill_context(self._num_predict)
        cap = self.options.num_ctx if self.options else None
        if fill is None or cap is None:
            return fill
        return lambda prompt, context: fill(prompt, min(context, cap))


class GenerateRequest(_Request):
    """POST /api/generate."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    images: list[str] | None = Field(default=None, description="refused unless empty")
    suffix: str | None = Field(default=None, description="refused unless empty")
    template: str | None = Field(default=None, description="refused unless empty")
    context: list[int] | None = Field(default=None, description="refused unless empty")

    def refuse_unsupported(self) -> None:
        """400 naming a field set to something the agent cannot honour."""
        super().refuse_unsupported()
        _refuse_images(self.images, "images")
        if self.suffix:
            raise ApiError(400, "suffix: fill-in-the-middle is not supported by this agent",
                           param="suffix")  # fmt: skip
        if self.template:
            raise ApiError(
                400,
                "template: the agent renders the model's own chat template; "
                "a per-request template is not supported",
                param="template",
            )
        if self.context:
            raise ApiError(400, "context (deprecated) is not supported; send the conversation "
                                "to /api/chat instead", param="context")  # fmt: skip


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
                {"id": "", "type": "function", "function": {"name": c.function.name,
                 "arguments": json.dumps(c.function.arguments)}} for c in self.tool_calls
            ]  # fmt: skip
        if self.tool_name:
            item["name"] = self.tool_name
        return item


class FunctionDef(OllamaBody):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolDef(OllamaBody):
    """An entry of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionDef


class ChatRequest(_Request):
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
        tools = [Tool(t.function.name, t.function.description, t.function.parameters)
                 for t in self.tools or []]  # fmt: skip
        return ChatPlan.of(tools=tools, schema=self.output_schema(), schema_field="format")


def _refuse_images(images: list[str] | None, param: str) -> None:
    if images:
        raise ApiError(400, f"{param}: this model reads text only; send no images",
                       param=param)  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _timings(generation: Generation, started_ns: int, request_wall: float) -> dict[str, Any]:
    done = generation.completion
    model: LoadedModel = generation.model
    reloaded = model.loaded_at >= request_wall
    return {
        "done_reason": "length" if done and done.finish_reason == "length" else "stop",
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": int(model.load_seconds * 1e9) if reloaded else 0,
        "prompt_eval_count": done.prompt_tokens if done else generation.prompt_tokens,
        "prompt_eval_duration": done.prompt_eval_ns if done else 0,
        "eval_count": done.completion_tokens if done else 0,
        "eval_duration": done.eval_ns if done else 0,
    }


async def _ndjson(
    generation: Generation, head: dict[str, Any], key: str, started_ns: int, wall: float
) -> AsyncIterator[bytes]:
    """One NDJSON line per batch of tokens, then the final line with done=true and timings."""
    wrap = (lambda t: {"role": "assistant", "content": t}) if key == "message" else (lambda t: t)
    text_line = text_event({**head, key: wrap(TEXT_SLOT), "done": False}, after="\n")
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if text:
                yield text_line(text)
    except AgentError as exc:
        yield (json.dumps({"error": from_agent_error(exc).message}) + "\n").encode()
        return
    final = {**head, "created_at": _now(), key: wrap(""), "done": True}
    yield (json.dumps({**final, **_timings(generation, started_ns, wall)}) + "\n").encode()


async def _answer(
    request: Request,
    runtime: ModelRuntime,
    body: _Request,
    key: str,
    build: Any,
    *,
    plan: ChatPlan | None = None,
) -> Any:
    started_ns, wall = time.perf_counter_ns(), time.time()
    served = _served(runtime, body.model)
    keep = keep_alive_seconds(body.keep_alive)
    generation = await runtime.generate(
        build,
        keep_alive=keep,
        max_tokens_default=body.max_tokens_default(),
        started=started_ns / 1e9,
    )
    head = {"model": served.ref, "created_at": _now()}
    headers = served.chat.as_header() if plan is not None else None
    if body.stream:
        if plan is not None and plan.reads_calls:
            parts = _ndjson_calls(generation, head, plan, started_ns, wall)
        else:
            parts = _ndjson(generation, head, key, started_ns, wall)
        return TokenStreamResponse(parts, generation, "application/x-ndjson", headers)
    text = await until_disconnect(request, generation.text(), generation.cancel)
    content: Any = _message(text, plan) if key == "message" else text
    answer = {**head, key: content, "done": True, **_timings(generation, started_ns, wall)}
    return JSONResponse(answer, headers=headers)


def _message(text: str, plan: ChatPlan | None) -> dict[str, Any]:
    """The assistant message: content, and tool_calls when the model called tools."""
    if plan is None:
        return {"role": "assistant", "content": text}
    content, calls = plan.read(text)
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [c.as_ollama() for c in calls]
    return message


async def _ndjson_calls(
    generation: Generation, head: dict[str, Any], plan: ChatPlan, started_ns: int, wall: float
) -> AsyncIterator[bytes]:
    """A chat that may call tools: read whole, then one line with the message, then done."""
    try:
        text = await generation.text()
    except AgentError as exc:
        yield (json.dumps({"error": from_agent_error(exc).message}) + "\n").encode()
        return
    yield (json.dumps({**head, "message": _message(text, plan), "done": False}) + "\n").encode()
    final = {**head, "created_at": _now(), "message": {"role": "assistant", "content": ""},
             "done": True, **_timings(generation, started_ns, wall)}  # fmt: skip
    yield (json.dumps(final) + "\n").encode()


async def _load_or_unload(runtime: ModelRuntime, body: _Request, key: str) -> dict[str, Any]:
    """Ollama's empty request: load the model (or unload it with keep_alive 0)."""
    served = _served(runtime, body.model)
    keep = keep_alive_seconds(body.keep_alive)
    empty: Any = {"role": "assistant", "content": ""} if key == "message" else ""
    if keep == 0:
        runtime.unload()
        reason = "unload"
    else:
        runtime.release(await runtime.lease(), keep)
        reason = "load"
    return {
        "model": served.ref,
        "created_at": _now(),
        key: empty,
        "done": True,
        "done_reason": reason,
    }


@router.post("/generate", response_model=None)
async def generate(
    body: GenerateRequest, request: Request, runtime: RuntimeDep, limits: LimitsDep
) -> Any:
    """Complete a prompt (templated as one user turn unless raw), NDJSON or one JSON object."""
    body.refuse_unsupported()
    if not body.prompt:
        return await _load_or_unload(runtime, body, "response")
    prompt = body.prompt
    limits.check_prompt((prompt, body.system), "prompt")
    plan = ChatPlan.of(schema=body.output_schema(), schema_field="format")

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        body.context_cap(model)
        plan.check_engine(model)
        # Like Ollama, a model without a template of its own (a base model) completes raw.
        if body.raw or model.chat.is_fallback:
            return prompt, replace(body.params(()), constraint=plan.constraint)
        turns = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = nonempty_prompt(model.chat.render(turns))
        return text, replace(body.params(model.chat.stop_strings), constraint=plan.constraint)

    return await _answer(request, runtime, body, "response", build)


@router.post("/chat", response_model=None)
async def chat(body: ChatRequest, request: Request, runtime: RuntimeDep, limits: LimitsDep) -> Any:
    """Chat with the model's template; NDJSON or one JSON object."""
    plan = body.plan()
    if not body.messages:
        return await _load_or_unload(runtime, body, "message")
    messages = [m.as_template_input() for m in body.messages]
    limits.check_prompt((m["content"] for m in messages), "messages")

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        body.context_cap(model)
        text = nonempty_prompt(plan.render(model, messages), "messages")
        params = body.params(model.chat.stop_strings)
        return text, replace(params, constraint=plan.constraint)

    return await _answer(request, runtime, body, "message", build, plan=plan)
