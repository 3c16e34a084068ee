"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.server.chat_plan import ChatPlan
from agent.server.deps import (
    LimitsDep,
    RuntimeDep,
    fill_context,
    nonempty_prompt,
    served_model,
)
from agent.server.embedding import embed_texts
from agent.server.errors import ApiError, from_agent_error
from agent.server.openai_requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from agent.server.streaming import TEXT_SLOT, TokenStreamResponse, text_event, until_disconnect
from agent.tool_calls import ToolCall

router = APIRouter(prefix="/v1", tags=["openai"])
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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
    plan = body.plan()
    messages = [m.as_template_input() for m in body.messages]
    limits.check_prompt((m["content"] for m in messages), "messages")
    max_tokens = body.max_completion_tokens or body.max_tokens

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        prompt = nonempty_prompt(plan.render(model, messages), "messages")
        params = body.params(max_tokens, model.chat.stop_strings)
        return prompt, replace(params, constraint=plan.constraint)

    generation = await runtime.generate(
        build, max_tokens_default=fill_context(max_tokens), started=started
    )
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.ref}
    headers = served.chat.as_header()
    if body.stream:
        chunk = {**base, "object": "chat.completion.chunk"}
        include = bool(body.stream_options and body.stream_options.include_usage)
        if plan.reads_calls:
            parts = _sse_calls(generation, chunk, plan, include)
        else:
            opener = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            parts = _sse(generation, chunk, _chat_delta, opener, include)
        return TokenStreamResponse(
            parts, generation, "text/event-stream", {**_SSE_HEADERS, **headers}
        )
    response.headers.update(headers)
    text = await until_disconnect(request, generation.text(), generation.cancel)
    content, calls = plan.read(text)
    choice = {
        "index": 0,
        "message": _message(content, calls),
        "logprobs": None,
        "finish_reason": "tool_calls" if calls else _finish(generation),
    }
    return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(generation)}


def _message(content: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.as_openai() for c in calls]
    return message


async def _sse_calls(
    generation: Generation, base: dict[str, Any], plan: ChatPlan, include_usage: bool
) -> AsyncIterator[bytes]:
    """SSE for a chat that may call tools: prose streams, calls come whole at the end."""

    def event(delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    scanner = plan.scanner()
    try:
        if scanner is None:  # one forced call: its JSON is the whole answer
            content, calls = plan.read(await generation.text())
        else:
            async for chunks in generation:
                text = scanner.push("".join(c.text for c in chunks))
                if text:
                    yield event({"content": text})
            content, found = scanner.finish()
            calls = plan.trim(found)
    except AgentError as exc:
        err = from_agent_error(exc)
        body = {"message": err.message, "type": "server_error", "param": None, "code": err.code}
        yield f"data: {json.dumps({'error': body})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
    if content:
        yield event({"content": content})
    if calls:
        yield event({"tool_calls": [{"index": i, **c.as_openai()} for i, c in enumerate(calls)]})
    yield event({}, "tool_calls" if calls else _finish(generation))
    if include_usage:
        usage = {**base, "choices": [], "usage": _usage(generation)}
        yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


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
    body.refuse_unsupported()
    if body.suffix:
        raise ApiError(
            400, "suffix (fill-in-the-middle) is not supported by this agent", param="suffix"
        )
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


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Pooled, L2-normalised embeddings of one text or a batch, from the served model."""
    served = served_model(runtime, body.model)
    if body.dimensions is not None:
        raise ApiError(400, "dimensions: the model's embedding size is fixed", param="dimensions")
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors, tokens = await embed_texts(runtime, texts, "input")
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": served.ref, "usage": usage}


def _encoded(vector: list[float], encoding: str) -> Any:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


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
