"""Ollama's remaining routes: `/` (the CLI's liveness check), embeddings, copy, delete, create.

The agent serves one model, so copy adds a name for it, delete of a copy removes that name and
delete of the model itself unloads and forgets it (its files stay: the control plane owns
them), and create loads a local GGUF as the served model under the given name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field

from agent.errors import AgentError
from agent.server.deps import RuntimeDep, keep_alive_seconds, served_model
from agent.server.embedding import embed_texts
from agent.server.errors import ApiError
from agent.server.ollama_requests import OllamaBody, Options

root_router = APIRouter(tags=["ollama"])
router = APIRouter(prefix="/api", tags=["ollama"])
RUNNING = "Ollama is running"


@root_router.get("/", response_class=PlainTextResponse)
async def running() -> PlainTextResponse:
    """'Ollama is running': what the Ollama CLI checks before every command."""
    return PlainTextResponse(RUNNING)


@root_router.head("/", response_class=Response)
async def running_head() -> Response:
    """The same check, headers only."""
    return Response(media_type="text/plain; charset=utf-8")


class EmbedRequest(OllamaBody):
    """POST /api/embed."""

    model: str
    input: str | list[str]
    truncate: bool = Field(default=True, description="inputs over the context answer 400")
    options: Options | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = Field(default=None, description="refused unless null")


class LegacyEmbeddingsRequest(OllamaBody):
    """POST /api/embeddings (the older endpoint)."""

    model: str
    prompt: str
    options: Options | None = None
    keep_alive: str | float | None = None


@router.post("/embed")
async def embed(body: EmbedRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Pooled, L2-normalised embeddings of one input or a batch."""
    started = time.perf_counter_ns()
    served = served_model(runtime, body.model)
    if body.dimensions is not None:
        raise ApiError(400, "dimensions: the model's embedding size is fixed", param="dimensions")
    _refuse_options(body.options)
    texts = [body.input] if isinstance(body.input, str) else body.input
    keep = keep_alive_seconds(body.keep_alive)
    vectors, tokens = await embed_texts(runtime, texts, "input", keep)
    return {
        "model": served.ref,
        "embeddings": vectors,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


@router.post("/embeddings")
async def embeddings(body: LegacyEmbeddingsRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """The older endpoint: one prompt, one embedding."""
    served_model(runtime, body.model)
    _refuse_options(body.options)
    keep = keep_alive_seconds(body.keep_alive)
    vectors, _ = await embed_texts(runtime, [body.prompt], "prompt", keep)
    return {"embedding": vectors[0]}


def _refuse_options(options: Options | None) -> None:
    if options is not None and options.model_dump(exclude_none=True):
        raise ApiError(400, "options do not apply to embeddings; send none", param="options")


class CopyRequest(OllamaBody):
    """POST /api/copy."""

    source: str
    destination: str = Field(min_length=1)


class DeleteRequest(OllamaBody):
    """DELETE /api/delete (`model`, or the older `name`)."""

    model: str | None = None
    name: str | None = None


class CreateRequest(OllamaBody):
    """POST /api/create from a GGUF file on this device."""

    model: str = Field(min_length=1)
    from_: str = Field(alias="from", description="path of a .gguf file on this device")
    stream: bool = False


@router.post("/copy", response_class=Response)
async def copy(body: CopyRequest, runtime: RuntimeDep) -> Response:
    """Give the served model another name."""
    model = served_model(runtime, body.source)
    model.copies.add(body.destination)
    return Response(status_code=200)


@router.delete("/delete", response_class=Response)
async def delete(body: DeleteRequest, runtime: RuntimeDep) -> Response:
    """Remove a copy's name, or unload and forget the served model (files are kept)."""
    name = body.model or body.name or ""
    model = served_model(runtime, name or None)
    if not name:
        raise ApiError(400, "name the model to delete", param="model")
    if name in model.copies:
        model.copies.discard(name)
    else:
        runtime.clear()
    return Response(status_code=200)


@router.post("/create", response_model=None)
async def create(body: CreateRequest, runtime: RuntimeDep) -> Any:
    """Load a local .gguf as the served model, named `model`."""
    path = Path(body.from_).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ApiError(400, f"from: {path} is not a .gguf file on this device", param="from")
    try:
        loaded = await runtime.replace_model(path)
    except AgentError as exc:
        raise ApiError(400, f"from: cannot load {path}: {exc}", param="from") from exc
    name = body.model.removesuffix(":latest")
    loaded.name = name
    return JSONResponse({"status": "success"})
