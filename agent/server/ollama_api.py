"""Ollama-compatible generation routes: /api/generate and /api/chat (models: ollama_models)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.runtime import ModelRuntime
from agent.server import ollama_pull
from agent.server.chat_plan import ChatPlan
from agent.server.deps import (
    LimitsDep,
    RuntimeDep,
    keep_alive_seconds,
    nonempty_prompt,
)
from agent.server.deps import served_model as _served
from agent.server.errors import from_agent_error
from agent.server.infill import fim_prompt
from agent.server.logprobs import check_engine, of_chunks, openai_content, read_all
from agent.server.ollama_requests import ChatRequest, GenerateRequest, OllamaRequest
from agent.server.streaming import TEXT_SLOT, TokenStreamResponse, text_event, until_disconnect

router = APIRouter(prefix="/api", tags=["ollama"])
router.add_api_route("/pull", ollama_pull.pull, methods=["POST"], response_model=None)


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
    with_logprobs = generation.params.logprobs is not None
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if with_logprobs:
                found = openai_content(of_chunks(chunks))
                line = {**head, key: wrap(text), "done": False, "logprobs": found}
                yield (json.dumps(line) + "\n").encode()
            elif text:
                yield text_line(text)
    except AgentError as exc:
        yield (json.dumps({"error": from_agent_error(exc).message}) + "\n").encode()
        return
    final = {**head, "created_at": _now(), key: wrap(""), "done": True}
    yield (json.dumps({**final, **_timings(generation, started_ns, wall)}) + "\n").encode()


async def _answer(
    request: Request,
    runtime: ModelRuntime,
    body: OllamaRequest,
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
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    content: Any = _message(text, plan) if key == "message" else text
    answer = {**head, key: content, "done": True, **_timings(generation, started_ns, wall)}
    if generation.params.logprobs is not None:
        answer["logprobs"] = openai_content(found)
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
    """A chat that may call tools: prose streams line by line, the calls come whole at the end."""

    def line(message: dict[str, Any], **extra: Any) -> bytes:
        return (json.dumps({**head, "message": message, **extra}) + "\n").encode()

    try:
        async for part in plan.stream(generation):
            if isinstance(part, str):
                yield line({"role": "assistant", "content": part}, done=False)
            else:
                answer = part
    except AgentError as exc:
        yield (json.dumps({"error": from_agent_error(exc).message}) + "\n").encode()
        return
    if answer.content or answer.calls:
        message: dict[str, Any] = {"role": "assistant", "content": answer.content or ""}
        if answer.calls:
            message["tool_calls"] = [c.as_ollama() for c in answer.calls]
        yield line(message, done=False)
    timings = _timings(generation, started_ns, wall)
    if generation.params.logprobs is not None:  # a call's tokens are known only at its end
        timings["logprobs"] = openai_content(answer.logprobs)
    yield line({"role": "assistant", "content": ""}, created_at=_now(), done=True, **timings)


async def _load_or_unload(runtime: ModelRuntime, body: OllamaRequest, key: str) -> dict[str, Any]:
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
        if body.logprobs:
            check_engine(model, "logprobs", body.top_logprobs or 0)
        if body.suffix:  # fill in the middle, raw: the model's FIM tokens around both texts
            return fim_prompt(model, prompt, body.suffix), replace(
                body.params(()), constraint=plan.constraint
            )
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
        if body.logprobs:
            check_engine(model, "logprobs", body.top_logprobs or 0)
        text = nonempty_prompt(plan.render(model, messages), "messages")
        params = body.params(model.chat.stop_strings)
        return text, replace(params, constraint=plan.constraint)

    return await _answer(request, runtime, body, "message", build, plan=plan)
