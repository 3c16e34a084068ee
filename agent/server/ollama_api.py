"""Ollama-compatible generation routes: /api/generate and /api/chat (models: ollama_models)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.runtime import LoadedModel, ModelRuntime
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
from agent.server.errors import from_agent_error
from agent.server.limits import MAX_INT_PARAM, RequestBody
from agent.server.streaming import TEXT_SLOT, TokenStreamResponse, text_event, until_disconnect

router = APIRouter(prefix="/api", tags=["ollama"])


class Options(RequestBody):
    """Ollama's model options (the ones an engine applies; others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_INT_PARAM)
    repeat_penalty: float | None = Field(default=None, gt=0, le=100)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    num_predict: int | None = Field(default=None, le=MAX_INT_PARAM)
    stop: list[str] | None = None


class _Request(RequestBody):
    model: str
    stream: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    format: Any = None

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
        return fill_context(self._num_predict)


class GenerateRequest(_Request):
    """POST /api/generate."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False


class Message(RequestBody):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""


class ChatRequest(_Request):
    """POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)


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
    chat: bool = False,
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
    headers = served.chat.as_header() if chat else None
    if body.stream:
        parts = _ndjson(generation, head, key, started_ns, wall)
        return TokenStreamResponse(parts, generation, "application/x-ndjson", headers)
    text = await until_disconnect(request, generation.text(), generation.cancel)
    content: Any = {"role": "assistant", "content": text} if key == "message" else text
    answer = {**head, key: content, "done": True, **_timings(generation, started_ns, wall)}
    return JSONResponse(answer, headers=headers)


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
    if not body.prompt:
        return await _load_or_unload(runtime, body, "response")
    prompt = body.prompt
    limits.check_prompt((prompt, body.system), "prompt")

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        # Like Ollama, a model without a template of its own (a base model) completes raw.
        if body.raw or model.chat.is_fallback:
            return prompt, body.params(())
        turns = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = nonempty_prompt(model.chat.render(turns))
        return text, body.params(model.chat.stop_strings)

    return await _answer(request, runtime, body, "response", build)


@router.post("/chat", response_model=None)
async def chat(body: ChatRequest, request: Request, runtime: RuntimeDep, limits: LimitsDep) -> Any:
    """Chat with the model's template; NDJSON or one JSON object."""
    if not body.messages:
        return await _load_or_unload(runtime, body, "message")
    messages = [m.model_dump() for m in body.messages]
    limits.check_prompt((m["content"] for m in messages), "messages")

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        text = model.chat.render(messages)
        return nonempty_prompt(text, "messages"), body.params(model.chat.stop_strings)

    return await _answer(request, runtime, body, "message", build, chat=True)
