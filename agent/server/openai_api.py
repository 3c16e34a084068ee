"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response

from agent.engines.base import SamplingParams, TokenLogprob
from agent.model_loading import LoadedModel
from agent.server.deps import (
    LimitsDep,
    RuntimeDep,
    fill_context,
    nonempty_prompt,
    served_model,
)
from agent.server.embedding import embed_texts
from agent.server.errors import ApiError
from agent.server.infill import fim_prompt
from agent.server.logprobs import (
    check_engine,
    check_prompt_engine,
    legacy_completion,
    openai_content,
    read_all,
)
from agent.server.openai_requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from agent.server.openai_sse import (
    SSE_HEADERS,
    completion_offsets,
    finish_reason,
    sse_calls,
    sse_text,
    usage_of,
)
from agent.server.streaming import TokenStreamResponse, until_disconnect
from agent.tool_calls import ToolCall

router = APIRouter(prefix="/v1", tags=["openai"])


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
            check_engine(model, "logprobs", params.logprobs)
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
            parts = sse_calls(generation, chunk, plan, include, shape)
        else:
            opener = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            parts = sse_text(generation, chunk, _chat_delta, opener, include, shape)
        return TokenStreamResponse(
            parts, generation, "text/event-stream", {**SSE_HEADERS, **headers}
        )
    response.headers.update(headers)
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    content, calls = plan.read(text)
    choice = {
        "index": 0,
        "message": _message(content, calls),
        "logprobs": _chat_logprobs(found) if generation.params.logprobs is not None else None,
        "finish_reason": "tool_calls" if calls else finish_reason(generation),
    }
    return {**base, "object": "chat.completion", "choices": [choice], "usage": usage_of(generation)}


def _message(content: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.as_openai() for c in calls]
    return message


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
        if params.logprobs is not None:  # legacy: `logprobs` is the number of alternatives
            check_engine(model, "logprobs", params.logprobs, top_param="logprobs")
            if body.echo and not body.stream and not body.suffix:  # the prompt's tokens too
                check_prompt_engine(model)
                params = replace(params, prompt_logprobs=params.logprobs)
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
        shape = (
            completion_offsets(len(prompt) if body.echo else 0)
            if body.logprobs is not None
            else None
        )
        parts = sse_text(generation, chunk, _text_choice, opener, include, shape)
        return TokenStreamResponse(parts, generation, "text/event-stream", SSE_HEADERS)
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    echoed = prompt if body.echo else ""
    choice = _text_choice(echoed + text)
    choice["finish_reason"] = finish_reason(generation)
    if body.logprobs is not None:
        done = generation.completion
        prompt_logprobs = done.prompt_logprobs if done is not None else None
        choice["logprobs"] = legacy_completion(found, len(echoed), prompt_logprobs)
    return {**base, "object": "text_completion", "choices": [choice], "usage": usage_of(generation)}


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
