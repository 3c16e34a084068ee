"""Ollama's `POST /api/pull`: fetch a model (agent/model_pull.py), verify it, then serve it.

The agent serves one model, so a pulled model becomes the served one, as with /api/create:
it shows in /api/tags under the name it was pulled by and answers generate and chat. Checks
that can fail before downloading (the name, enrollment, the manifest and its signature, the
file's size, whether the memory can hold the model: 400, whether the disk can: 507) answer in
Ollama's shape; once progress lines are streaming, a failure (the disk filled since the checks,
a sha256 mismatch) is a last `{"error": ...}` line, as Ollama does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from agent.errors import AgentError
from agent.model_pull import ModelPull, PullError, PullSettings
from agent.runtime import ModelRuntime
from agent.server.deps import RuntimeDep
from agent.server.errors import ApiError
from agent.server.ollama_requests import OllamaBody

_LOGGER = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


class PullRequest(OllamaBody):
    """POST /api/pull (`model`, or the older `name`)."""

    model: str | None = None
    name: str | None = None
    insecure: bool = Field(
        default=False,
        description="take a path or URL without #sha256=<hex>; only where the agent's "
        "allow_insecure_pull setting permits it",
    )
    stream: bool = True


def pull_settings(request: Request) -> PullSettings:
    """What the serving command put on app.state, else the settings from env and config file."""
    settings: PullSettings | None = getattr(request.app.state, "pull_settings", None)
    if settings is None:
        from agent.config import AgentSettings

        settings = PullSettings.of(AgentSettings())
    return settings


async def pull(body: PullRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Download and verify a model by name, path or URL, then serve it."""
    name = body.model or body.name or ""
    if not name:
        raise ApiError(400, "name the model to pull", param="model")
    job = ModelPull(name, pull_settings(request), insecure=body.insecure)
    try:
        await asyncio.to_thread(job.prepare)
    except PullError as exc:
        raise ApiError(exc.status, str(exc), param="model") from exc
    if body.stream:
        return StreamingResponse(_progress_lines(job, runtime), media_type=NDJSON)
    try:
        path = await asyncio.to_thread(job.run, lambda _line: None)
        await _serve(runtime, job, path)
    except PullError as exc:
        raise ApiError(exc.status, str(exc), param="model") from exc
    return JSONResponse({"status": "success"})


async def _progress_lines(job: ModelPull, runtime: ModelRuntime) -> AsyncIterator[bytes]:
    """The pull's progress as NDJSON, then `success` (or an `error` line)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(line: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, line)

    work = asyncio.ensure_future(asyncio.to_thread(job.run, emit))
    try:
        while not work.done() or not lines.empty():
            getter = asyncio.ensure_future(lines.get())
            await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield _line(getter.result())
            else:
                getter.cancel()
        path = work.result()
        await _serve(runtime, job, path)
        yield _line({"status": "success"})
    except AgentError as exc:
        yield _line({"error": str(exc)})
    except Exception as exc:  # a bug or an unexpected library error: still Ollama's shape
        _LOGGER.exception("pull of %s failed", job.name)
        yield _line({"error": f"pull of {job.name} failed: {exc}"})
    finally:
        job.cancel.set()  # the client left mid-download: stop (a later pull resumes)
        if not work.cancel() and not work.cancelled():
            work.exception()  # retrieved here, so asyncio does not log it as lost


async def _serve(runtime: ModelRuntime, job: ModelPull, path: Path) -> None:
    """Load the pulled model as the served one, named as it was pulled."""
    try:
        loaded = await runtime.replace_model(path)
    except AgentError as exc:
        raise PullError(f"{job.name} was pulled to {path} but cannot be loaded: {exc}") from exc
    if not job.from_registry:
        loaded.name = job.name  # clients use the name they pulled by
    _LOGGER.info("pulled %s into %s and serving it", job.name, path)


def _line(item: dict[str, Any]) -> bytes:
    return json.dumps(item).encode() + b"\n"
