"""Ollama-compatible routes: /api/generate, chat, tags, ps, show and version."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from agent import __version__
from agent.chat import chat_stop_strings, render_chat
from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.runtime import FOREVER, LoadedModel, ModelRuntime
from agent.server.deps import RuntimeDep, fill_context, keep_alive_seconds, sampling, stop_tuple
from agent.server.deps import served_model as _served
from agent.server.errors import from_agent_error
from agent.server.streaming import TokenStreamResponse, until_disconnect

router = APIRouter(prefix="/api", tags=["ollama"])
_HOLE = json.dumps("\x00")


class Options(BaseModel):
    """Ollama's model options (the ones an engine applies; others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repeat_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None
    num_predict: int | None = None
    stop: list[str] | None = None


class _Request(BaseModel):
    model: str
    stream: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    format: Any = None

    def params(self, extra_stops: tuple[str, ...]) -> SamplingParams:
        o = self.options or Options()
        max_tokens = o.num_predict if o.num_predict and o.num_predict > 0 else None
        return sampling(
            max_tokens=max_tokens,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            repeat_penalty=o.repeat_penalty,
            seed=o.seed,
            stop=stop_tuple(o.stop, extra_stops),
        )

    def max_tokens_default(self) -> Any:
        o = self.options or Options()
        return fill_context(o.num_predict if o.num_predict and o.num_predict > 0 else None)


class GenerateRequest(_Request):
    """POST /api/generate."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False


class Message(BaseModel):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""


class ChatRequest(_Request):
    """POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)


class ShowRequest(BaseModel):
    """POST /api/show (`model`, or the older `name`)."""

    model: str | None = None
    name: str | None = None


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
    prefix, suffix = json.dumps({**head, key: wrap("\x00"), "done": False}).split(_HOLE)
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if text:
                yield (prefix + json.dumps(text) + suffix + "\n").encode()
    except AgentError as exc:
        yield (json.dumps({"error": from_agent_error(exc).message}) + "\n").encode()
        return
    final = {**head, "created_at": _now(), key: wrap(""), "done": True}
    yield (json.dumps({**final, **_timings(generation, started_ns, wall)}) + "\n").encode()


async def _answer(
    request: Request, runtime: ModelRuntime, body: _Request, key: str, build: Any
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
    if body.stream:
        parts = _ndjson(generation, head, key, started_ns, wall)
        return TokenStreamResponse(parts, generation, "application/x-ndjson")
    text = await until_disconnect(request, generation.text(), generation.cancel)
    content: Any = {"role": "assistant", "content": text} if key == "message" else text
    return {**head, key: content, "done": True, **_timings(generation, started_ns, wall)}


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
async def generate(body: GenerateRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Complete a prompt (templated as one user turn unless raw), NDJSON or one JSON object."""
    if not body.prompt:
        return await _load_or_unload(runtime, body, "response")
    prompt = body.prompt

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        if body.raw:
            return prompt, body.params(())
        turns = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = render_chat(
            model.chat_template, turns, bos_token=model.bos_token, eos_token=model.eos_token
        )
        return text, body.params(chat_stop_strings(model.chat_template, model.eos_token))

    return await _answer(request, runtime, body, "response", build)


@router.post("/chat", response_model=None)
async def chat(body: ChatRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Chat with the model's template; NDJSON or one JSON object."""
    if not body.messages:
        return await _load_or_unload(runtime, body, "message")
    messages = [m.model_dump() for m in body.messages]

    def build(model: LoadedModel) -> tuple[str, SamplingParams]:
        template = model.chat_template
        text = render_chat(template, messages, bos_token=model.bos_token, eos_token=model.eos_token)
        return text, body.params(chat_stop_strings(template, model.eos_token))

    return await _answer(request, runtime, body, "message", build)


def _details(model: LoadedModel) -> dict[str, Any]:
    manifest = model.manifest
    variant = manifest.variant(model.variant_id) if manifest else None
    return {
        "parent_model": "",
        "format": variant.format if variant else "gguf",
        "family": manifest.architecture if manifest else "",
        "families": [manifest.architecture] if manifest else None,
        "parameter_size": f"{manifest.parameters / 1e6:.1f}M" if manifest else "",
        "quantization_level": variant.precision.upper() if variant else "",
    }


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summary(model: LoadedModel) -> dict[str, Any]:
    manifest = model.manifest
    if manifest is not None:
        size = manifest.variant(model.variant_id).size_bytes
        digest = hashlib.sha256(manifest.canonical_bytes()).hexdigest()
    else:
        size = _file_size(model.path)
        digest = hashlib.sha256(f"{model.path}:{size}".encode()).hexdigest()
    modified = datetime.fromtimestamp(model.loaded_at, timezone.utc).isoformat()
    return {
        "name": model.ref,
        "model": model.ref,
        "modified_at": modified,
        "size": size,
        "digest": digest,
        "details": _details(model),
    }


@router.get("/tags")
async def tags(runtime: RuntimeDep) -> dict[str, Any]:
    """The models this agent can serve."""
    known = runtime.known
    return {"models": [_summary(known)] if known is not None else []}


@router.get("/ps")
async def ps(runtime: RuntimeDep) -> dict[str, Any]:
    """The models loaded in memory now, with when keep_alive unloads them."""
    active = runtime.active
    if active is None:
        return {"models": []}
    expires = runtime.expires_at if runtime.expires_at is not None else None
    if expires is None or expires == FOREVER:
        expires_at = "2318-11-30T00:00:00Z"  # Ollama's way of saying "never"
    else:
        expires_at = datetime.fromtimestamp(expires, timezone.utc).isoformat()
    entry = _summary(active)
    vram = entry["size"] if active.device.upper().startswith(("GPU", "CUDA")) else 0
    return {"models": [{**entry, "expires_at": expires_at, "size_vram": vram}]}


@router.post("/show")
async def show(body: ShowRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Details of the model, including which engine and variant were chosen and why."""
    model = _served(runtime, body.model or body.name)
    selection = model.selection
    candidates = getattr(selection, "candidates", None) or []
    return {
        "modelfile": "",
        "parameters": "",
        "template": model.chat_template,
        "details": _details(model),
        "model_info": {
            "general.architecture": _details(model)["family"],
            "general.parameter_count": model.manifest.parameters if model.manifest else 0,
        },
        "capabilities": ["completion"],
        "modified_at": _summary(model)["modified_at"],
        "edgefleet": {
            "variant": model.variant_id,
            "engine": model.engine_name,
            "device": model.device,
            "explanation": model.explanation,
            "load_seconds": model.load_seconds,
            "candidates": [_jsonable(c) for c in candidates],
        },
    }


def _jsonable(candidate: Any) -> Any:
    if isinstance(candidate, BaseModel):
        return candidate.model_dump(mode="json")
    if hasattr(candidate, "__dataclass_fields__"):
        import dataclasses

        return json.loads(json.dumps(dataclasses.asdict(candidate), default=str))
    return str(candidate)


@router.get("/version")
async def version() -> dict[str, str]:
    """The agent's version."""
    return {"version": __version__}
