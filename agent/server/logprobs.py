"""Log-probabilities of generated tokens in each API's own shape, and the 400 when they can't be.

An engine that exposes them (llama.cpp with alternatives, OpenVINO's continuous batching with
the chosen token's only) fills `TokenChunk.logprob` for requests that set
`SamplingParams.logprobs`; nothing is computed for the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.engines.base import (
    PromptLogprobs,
    TokenChunk,
    TokenLogprob,
    exposes_logprobs,
    exposes_prompt_logprobs,
    top_logprobs_limit,
)
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.server.errors import ApiError

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


def check_engine(
    model: LoadedModel, param: str, top: int = 0, top_param: str = "top_logprobs"
) -> None:
    """400 naming the field when the engine serving the model cannot give log-probabilities
    (`param`), or not `top` alternatives per token (`top_param`)."""
    if not exposes_logprobs(model.engine):
        raise _unsupported(
            model,
            param,
            "does not expose its logits, so log-probabilities cannot be given; leave the field out",
        )
    limit = top_logprobs_limit(model.engine)
    if limit is not None and top > limit:
        gives = "only the chosen token's log-probability" if limit == 0 else f"{limit} at most"
        raise _unsupported(
            model, top_param, f"gives {gives}, not {top} alternatives; ask for {limit}"
        )


def check_prompt_engine(model: LoadedModel) -> None:
    """400 naming `echo` when the engine cannot score the prompt's tokens (echo with logprobs)."""
    if not exposes_prompt_logprobs(model.engine):
        raise _unsupported(
            model,
            "echo",
            "does not give the prompt's log-probabilities, which echo with logprobs asks for; "
            "leave out echo or logprobs",
        )


def _unsupported(model: LoadedModel, param: str, what: str) -> ApiError:
    return ApiError(
        400,
        f"{param}: the {model.engine_name} engine serving this model {what}, or serve a GGUF "
        "variant on llama.cpp",
        code="unsupported_on_engine",
        param=param,
    )


async def read_all(generation: Generation) -> tuple[str, list[TokenLogprob]]:
    """The whole text and the log-probabilities its tokens carry (when asked for)."""
    parts: list[str] = []
    found: list[TokenLogprob] = []
    async for chunks in generation:
        parts.extend(c.text for c in chunks)
        found.extend(of_chunks(chunks))
    return "".join(parts), found


def _text(token: bytes) -> str:
    return token.decode("utf-8", errors="replace")


def of_chunks(chunks: Iterable[TokenChunk]) -> list[TokenLogprob]:
    """The log-probabilities the chunks carry, in order."""
    return [c.logprob for c in chunks if c.logprob is not None]


def openai_content(
    found: Iterable[TokenLogprob], *, with_bytes: bool = True
) -> list[dict[str, Any]]:
    """Chat completions' `choices[].logprobs.content` (the Ollama and Responses shape too).

    `with_bytes=False` leaves `bytes` out: the Responses API's text delta and done events.
    """

    def entry(token: bytes, logprob: float) -> dict[str, Any]:
        shaped: dict[str, Any] = {"token": _text(token), "logprob": logprob}
        if with_bytes:
            shaped["bytes"] = list(token)
        return shaped

    return [
        {**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
        for lp in found
    ]


def covering(found: Iterable[TokenLogprob], text: str) -> list[TokenLogprob]:
    """The leading entries whose tokens' bytes spell the start of `text` (all, for the whole)."""
    target = text.encode()
    taken: list[TokenLogprob] = []
    at = 0
    for lp in found:
        if not target.startswith(lp.token, at):
            break
        taken.append(lp)
        at += len(lp.token)
    return taken


def legacy_completion(
    found: Iterable[TokenLogprob], offset: int, prompt: PromptLogprobs | None = None
) -> dict[str, Any]:
    """/v1/completions' `choices[].logprobs`: parallel lists, text offsets from `offset`.

    With the prompt's log-probabilities (echo) its tokens come first, from offset 0, the first
    with null for its log-probability and alternatives, as OpenAI's echo.
    """
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    entries: list[TokenLogprob] = list(found)
    if prompt is not None:
        offset = len(_text(prompt.first))
        tokens.append(_text(prompt.first))
        values.append(None)
        tops.append(None)
        offsets.append(0)
        entries = [*prompt.scored, *entries]
    for lp in entries:
        text = _text(lp.token)
        offsets.append(offset)
        offset += len(text)
        tokens.append(text)
        values.append(lp.logprob)
        tops.append({_text(t): v for t, v in lp.top})
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
