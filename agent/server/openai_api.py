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

from agent.engines.base import SamplingParams, TokenLogprob
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
from agent.server.infill import fim_prompt
from agent.server.logprobs import (
    check_engine,
    legacy_completion,
    of_chunks,
    openai_content,
    read_all,
)
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


LogprobsShape = Callable[[list[TokenLogprob]], Any]


async def _sse(
    generation: Generation,
    base: dict[str, Any],
    wrap: Callable[[Any], dict[str, Any]],
    first: dict[str, Any] | None,
    include_usage: bool,
    logprobs: LogprobsShape | None = None,
) -> AsyncIterator[bytes]:
    """SSE events: one per batch of tokens, the text spliced into a pre-serialized chunk.

    With `logprobs` (the request asked for them) each event is built whole, carrying the
    log-probabilities of its tokens in the API's shape.
    """
    text_chunk = text_event({**base, "choices": [wrap(TEXT_SLOT)]}, before="data: ", after="\n\n")

    def event(choice: dict[str, Any], **extra: Any) -> bytes:
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n".encode()

    if first is not None:
        yield event(first)
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if logprobs is not None:
                found = of_chunks(chunks)
                if text or found:
                    yield event({**wrap(text), "logprobs": logprobs(found)})
            elif text:
                yield text_chunk(text)
    except AgentError as exc:
        yield _sse_error(exc)
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
        if params.logprobs is not None:
            check_engine(model, "logprobs")
        return prompt, replace(params, constraint=plan.constraint)

    generation = await runtime.generate(
        build, max_tokens_default=fill_context(max_tokens), started=started
    )
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.ref}
    headers = served.chat.as_header()
    if body.stream:
        chunk = {**base, "object": "chat.completion.chunk"}
        include = bool(body.stream_options and body.stream_options.include_usage)
        shape = _chat_logprobs if generation.params.logprobs is not None else None
        if plan.reads_calls:
            parts = _sse_calls(generation, chunk, plan, include, shape)
        else:
            opener = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            parts = _sse(generation, chunk, _chat_delta, opener, include, shape)
        return TokenStreamResponse(
            parts, generation, "text/event-stream", {**_SSE_HEADERS, **headers}
        )
    response.headers.update(headers)
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    content, calls = plan.read(text)
    choice = {
        "index": 0,
        "message": _message(content, calls),
        "logprobs": _chat_logprobs(found) if generation.params.logprobs is not None else None,
        "finish_reason": "tool_calls" if calls else _finish(generation),
    }
    return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(generation)}


def _message(content: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.as_openai() for c in calls]
    return message


async def _sse_calls(
    generation: Generation,
    base: dict[str, Any],
    plan: ChatPlan,
    include_usage: bool,
    logprobs: LogprobsShape | None = None,
) -> AsyncIterator[bytes]:
    """SSE for a chat that may call tools: prose streams, calls come whole at the end.

    Log-probabilities, when asked for, ride on the last event: the tokens of a call are only
    known to be one once it is complete.
    """

    def event(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason, **extra}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    try:
        async for part in plan.stream(generation):
            if isinstance(part, str):
                yield event({"content": part})
            else:
                answer = part
    except AgentError as exc:
        yield _sse_error(exc)
        return
    calls = answer.calls
    if answer.content:
        yield event({"content": answer.content})
    if calls:
        yield event({"tool_calls": [{"index": i, **c.as_openai()} for i, c in enumerate(calls)]})
    shaped = logprobs(answer.logprobs) if logprobs is not None else None
    yield event({}, "tool_calls" if calls else _finish(generation), logprobs=shaped)
    if include_usage:
        usage = {**base, "choices": [], "usage": _usage(generation)}
        yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _sse_error(exc: AgentError) -> bytes:
    """An error event in OpenAI's shape and the end of the stream."""
    err = from_agent_error(exc)
    body = {"message": err.message, "type": "server_error", "param": None, "code": err.code}
    return f"data: {json.dumps({'error': body})}\n\ndata: [DONE]\n\n".encode()


def _chat_logprobs(found: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": openai_content(found), "refusal": None}


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
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1 or body.n != 1:
        raise ApiError(400, "exactly one prompt and n=1 are supported", param="prompt")
    limits.check_prompt([*prompts, body.suffix or ""], "prompt")
    prompt = prompts[0] if body.suffix else nonempty_prompt(prompts[0])

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        params = body.params(body.max_tokens, ())
        if params.logprobs is not None:
            check_engine(model, "logprobs")
        if body.suffix:  # fill in the middle: the model's FIM tokens around both texts
            return fim_prompt(model, prompt, body.suffix), params
        return prompt, params

    generation = await runtime.generate(
        build, max_tokens_default=fill_context(body.max_tokens), started=started
    )
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.ref}
    if body.stream:
        chunk = {**base, "object": "text_completion"}
        include = bool(body.stream_options and body.stream_options.include_usage)
        opener = _text_choice(prompt) if body.echo else None
        shape = _offsets(len(prompt) if body.echo else 0) if body.logprobs is not None else None
        parts = _sse(generation, chunk, _text_choice, opener, include, shape)
        return TokenStreamResponse(parts, generation, "text/event-stream", _SSE_HEADERS)
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    echoed = prompt if body.echo else ""
    choice = _text_choice(echoed + text)
    choice["finish_reason"] = _finish(generation)
    if body.logprobs is not None:
        choice["logprobs"] = legacy_completion(found, len(echoed))
    return {**base, "object": "text_completion", "choices": [choice], "usage": _usage(generation)}


def _offsets(start: int) -> LogprobsShape:
    """Legacy logprobs for successive stream events, text offsets running on from `start`."""
    offset = start

    def shape(found: list[TokenLogprob]) -> dict[str, Any]:
        nonlocal offset
        shaped = legacy_completion(found, offset)
        offset += sum(len(t) for t in shaped["tokens"])
        return shaped

    return shape


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
