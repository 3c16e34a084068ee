"""Fill-in-the-middle prompts (`suffix` of /v1/completions and Ollama's /api/generate)."""

from __future__ import annotations

from agent.engines.base import FillInTheMiddle
from agent.model_loading import LoadedModel
from agent.server.errors import ApiError


def fim_prompt(model: LoadedModel, prefix: str, suffix: str) -> str:
    """`<prefix>PREFIX<suffix>SUFFIX<middle>` in the model's own FIM tokens; 400 without them."""
    engine = model.engine
    tokens = engine.fim_tokens() if isinstance(engine, FillInTheMiddle) else None
    if tokens is None:
        raise ApiError(
            400,
            f"suffix: {model.ref} has no fill-in-the-middle tokens (prefix, suffix and "
            "middle) in its vocabulary, so it cannot complete between a prefix and a "
            "suffix; leave suffix out or serve a code model trained for FIM",
            param="suffix",
        )
    fim_prefix, fim_suffix, fim_middle = tokens
    return f"{fim_prefix}{prefix}{fim_suffix}{suffix}{fim_middle}"
