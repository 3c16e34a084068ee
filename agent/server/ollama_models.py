"""Ollama-compatible model routes: /api/tags, ps, show and version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from agent import __version__
from agent.engines.base import EmbeddingSource
from agent.keepalive import FOREVER
from agent.model_loading import LoadedModel
from agent.server.deps import RuntimeDep, served_model

router = APIRouter(prefix="/api", tags=["ollama"])


class ShowRequest(BaseModel):
    """POST /api/show (`model`, or the older `name`)."""

    model: str | None = None
    name: str | None = None


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


def _modified_at(model: LoadedModel) -> str:
    return datetime.fromtimestamp(model.loaded_at, timezone.utc).isoformat()


def _summary(model: LoadedModel) -> dict[str, Any]:
    manifest = model.manifest
    if manifest is not None:
        size = manifest.variant(model.variant_id).size_bytes
        digest = hashlib.sha256(manifest.canonical_bytes()).hexdigest()
    else:
        size = _file_size(model.path)
        digest = hashlib.sha256(f"{model.path}:{size}".encode()).hexdigest()
    return {
        "name": model.ref,
        "model": model.ref,
        "modified_at": _modified_at(model),
        "size": size,
        "digest": digest,
        "details": _details(model),
    }


def _gpu_share(model: LoadedModel) -> float:
    """The part of the model held in GPU memory: all, none, or offloaded layers / layers."""
    if not model.device.upper().startswith(("GPU", "CUDA")):
        return 0.0
    extra = model.engine.stats().extra
    try:
        return min(1.0, int(extra["gpu_layers"]) / int(extra["layers"]))
    except (KeyError, ValueError, ZeroDivisionError):
        return 1.0


@router.get("/tags")
async def tags(runtime: RuntimeDep) -> dict[str, Any]:
    """The models this agent can serve: the model, and each name /api/copy gave it."""
    known = runtime.known
    if known is None:
        return {"models": []}
    summary = _summary(known)
    copies = [{**summary, "name": name, "model": name} for name in sorted(known.copies)]
    return {"models": [summary, *copies]}


@router.get("/ps")
async def ps(runtime: RuntimeDep) -> dict[str, Any]:
    """The models loaded in memory now, with when keep_alive unloads them."""
    active = runtime.active
    if active is None:
        return {"models": []}
    expires = runtime.expires_at
    if expires is None or expires == FOREVER:
        expires_at = "2318-11-30T00:00:00Z"  # Ollama's way of saying "never"
    else:
        expires_at = datetime.fromtimestamp(expires, timezone.utc).isoformat()
    entry = _summary(active)
    vram = int(entry["size"] * _gpu_share(active))
    slots = _slots(active)
    return {"models": [{**entry, "expires_at": expires_at, "size_vram": vram, **slots}]}


def _slots(model: LoadedModel) -> dict[str, Any]:
    """Ollama's context_length (per sequence), and how many sequences run at once (ours)."""
    extra = model.engine.stats().extra
    try:
        parallel = int(extra.get("parallel", "1"))
    except ValueError:
        parallel = 1
    return {"context_length": model.engine.context_length, "parallel": parallel}


@router.post("/show")
async def show(body: ShowRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Details of the model, including which engine and variant were chosen and why."""
    model = served_model(runtime, body.model or body.name)
    candidates = getattr(model.selection, "candidates", None) or []
    details = _details(model)
    chat = model.chat
    return {
        "modelfile": "",
        "parameters": "",
        "template": chat.template,
        "details": {**details, "chat_template": chat.label},
        "model_info": {
            "general.architecture": details["family"],
            "general.parameter_count": model.manifest.parameters if model.manifest else 0,
        },
        "capabilities": _capabilities(model),
        "modified_at": _modified_at(model),
        "edgefleet": {
            "variant": model.variant_id,
            "engine": model.engine_name,
            "device": model.device,
            "chat_template": {
                "source": chat.source,
                "name": chat.name,
                "fallback": chat.is_fallback,
                "description": chat.describe(),
                "stop": list(chat.stop_strings),
            },
            "decided_by": getattr(model.selection, "decided_by", "bare .gguf"),
            "tokens_per_s": dict(getattr(model.selection, "tokens_per_s", None) or {}),
            "explanation": model.explanation,
            "load_seconds": model.load_seconds,
            "candidates": [_jsonable(c) for c in candidates],
        },
    }


def _capabilities(model: LoadedModel) -> list[str]:
    """What Ollama clients may ask of this model (the CLI checks `tools` before sending them)."""
    found = ["completion", "tools"]
    if isinstance(model.engine, EmbeddingSource):
        found.append("embedding")
    return found


def _jsonable(candidate: Any) -> Any:
    if isinstance(candidate, BaseModel):
        return candidate.model_dump(mode="json")
    if dataclasses.is_dataclass(candidate) and not isinstance(candidate, type):
        return json.loads(json.dumps(dataclasses.asdict(candidate), default=str))
    return str(candidate)


@router.get("/version")
async def version() -> dict[str, str]:
    """The agent's version."""
    return {"version": __version__}
