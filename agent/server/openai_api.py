"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.runtime import LoadedModel
from agent.server.deps import (
    LimitsDep,
    RuntimeDep,
    fill_context,
    nonempty_prompt,
    sampling,
    served_model,
    stop_tuple,
)
from agent.server.errors import ApiError, from_agent_error
from agent.server.limits import MAX_INT_PARAM, RequestBody
from agent.server.streaming import TEXT_SLOT, TokenStreamResponse, text_event, until_disconnect

router = APIRouter(prefix="/v1", tags=["openai"])
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ContentPart(RequestBody):
    """One part of a multi-part message; only text is supported."""

    type: str
    text: str | None = None


class ChatMessage(RequestBody):
    """One message of the conversation."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        """`{"role", "content"}` with text parts joined; images are rejected."""
        content = self.content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise ApiError(400, "only text content parts are supported", param="messages")
            content = "".join(p.text or "" for p in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class StreamOptions(RequestBody):
    """Options for streamed responses."""

    include_usage: bool = False


class SamplingFields(RequestBody):
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
    presence_penalty: float | None = None  # accepted, not applied
    frequency_penalty: float | None = None  # accepted, not applied
    user: str | None = None

    def params(self, max_tokens: int | None, extra_stops: tuple[str, ...]) -> SamplingParams:
        """SamplingParams for this request."""
        return sampling(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            stop=stop_tuple(self.stop, extra_stops),
        )


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT_PARAM)


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] = Field(description="one non-empty prompt (a list of exactly one)")
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_INT_PARAM)
    echo: bool = False


def _usage(generation: Generation) -> dict[str, int]:
    done = generation.completion
    prompt = done.prompt_tokens if done else generation.prompt_tokens
    produced = done.completion_tokens if done else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": produced,
        "total_tokens": prompt + produced,
    }


def _finish(generation: Generation) -> str:
    done = generation.completion
    return "length" if done is not None and done.finish_reason == "length" else "stop"


async def _sse(
    generation: Generation,
    base: dict[str, Any],
    wrap: Callable[[Any], dict[str, Any]],
    first: dict[str, Any] | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """SSE events: one per batch of tokens, the text spliced into a pre-serialized chunk."""
    text_chunk = text_event({**base, "choices": [wrap(TEXT_SLOT)]}, before="data: ", after="\n\n")

    def event(choice: dict[str, Any], **extra: Any) -> bytes:
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n".encode()

    if first is not None:
        yield event(first)
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if text:
                yield text_chunk(text)
    except AgentError as exc:
        err = from_agent_error(exc)
        body = {"message": err.message, "type": "server_error", "param": None, "code": err.code}
        yield f"data: {json.dumps({'error': body})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
    last = wrap("")
    last["finish_reason"] = _finish(generation)
    if "delta" in last:
        last["delta"] = {}
    yield event(last)
    if include_usage:
        usage = {**base, "choices": [], "usage": _usage(generation)}
        yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    limits: LimitsDep,
) -> Any:
    """Chat completion, streamed as SSE or in one JSON response."""
    started = time.perf_counter()
    served = served_model(runtime, body.model)
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    messages = [m.as_template_input() for m in body.messages]
    limits.check_prompt((m["content"] for m in messages), "messages")
    max_tokens = body.max_completion_tokens or body.max_tokens

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        prompt = model.chat.render(messages)
        return nonempty_prompt(prompt, "messages"), body.params(max_tokens, model.chat.stop_strings)

    generation = await runtime.generate(
        build, max_tokens_default=fill_context(max_tokens), started=started
    )
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.ref}
    if body.stream:
        chunk = {**base, "object": "chat.completion.chunk"}
        opener = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        include = bool(body.stream_options and body.stream_options.include_usage)
        parts = _sse(generation, chunk, _chat_delta, opener, include)
        headers = {**_SSE_HEADERS, **served.chat.as_header()}
        return TokenStreamResponse(parts, generation, "text/event-stream", headers)
    response.headers.update(served.chat.as_header())
    text = await until_disconnect(request, generation.text(), generation.cancel)
    message = {"role": "assistant", "content": text}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish(generation),
    }
    return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(generation)}


def _chat_delta(text: Any) -> dict[str, Any]:
    return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}


def _text_choice(text: Any) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": None}


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, runtime: RuntimeDep, limits: LimitsDep
) -> Any:
    """Plain text completion (no chat template), streamed as SSE or in one JSON response."""
    started = time.perf_counter()
    served = served_model(runtime, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1 or body.n != 1:
        raise ApiError(400, "exactly one prompt and n=1 are supported", param="prompt")
    limits.check_prompt(prompts, "prompt")
    prompt = nonempty_prompt(prompts[0])

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        return prompt, body.params(body.max_tokens, ())

    generation = await runtime.generate(
        build, max_tokens_default=fill_context(body.max_tokens), started=started
    )
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.ref}
    if body.stream:
        chunk = {**base, "object": "text_completion"}
        include = bool(body.stream_options and body.stream_options.include_usage)
        opener = _text_choice(prompt) if body.echo else None
        parts = _sse(generation, chunk, _text_choice, opener, include)
        return TokenStreamResponse(parts, generation, "text/event-stream", _SSE_HEADERS)
    text = await until_disconnect(request, generation.text(), generation.cancel)
    choice = _text_choice((prompt if body.echo else "") + text)
    choice["finish_reason"] = _finish(generation)
    return {**base, "object": "text_completion", "choices": [choice], "usage": _usage(generation)}


@router.get("/models")
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    """The model this agent serves (loaded or idle)."""
    known = runtime.known
    data = []
    if known is not None:
        created = int(known.loaded_at)
        data.append(
            {"id": known.ref, "object": "model", "created": created, "owned_by": "edgefleet"}
        )
    return {"object": "list", "data": data}
