"""Embeddings from the served model, shared by OpenAI /v1/embeddings and Ollama /api/embed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agent.engines.base import EmbeddingSource
from agent.runtime import ModelRuntime
from agent.server.errors import ApiError


async def embed_texts(
    runtime: ModelRuntime, texts: Sequence[str], param: str, keep_alive: float | None = None
) -> tuple[list[list[float]], int]:
    """Pooled, normalised vectors for `texts` and their token count; 400 if the engine can't."""
    if not texts or any(not t for t in texts):
        raise ApiError(400, f"{param} must hold at least one non-empty text", param=param)
    leased = await runtime.lease()  # the active model, reloaded after an idle unload
    try:
        engine = leased.engine
        if not isinstance(engine, EmbeddingSource):
            raise ApiError(
                400,
                f"{param}: the {leased.engine_name} engine serving this model "
                "cannot embed text; serve a GGUF variant on llama.cpp",
                code="unsupported_on_engine",
                param=param,
            )
        return await asyncio.to_thread(engine.embed, list(texts))
    finally:
        runtime.release(leased, keep_alive)
