"""OpenAI's server-sent events for chat and text completions, and the usage and finish fields.

One event per batch of tokens, pre-serialized with only the text spliced in, unless the request
asked for log-probabilities (then each event carries those of its tokens).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.engines.base import TokenLogprob
from agent.errors import AgentError
from agent.generation import Generation
from agent.server.chat_plan import ChatPlan
from agent.server.errors import from_agent_error
from agent.server.logprobs import legacy_completion, of_chunks
from agent.server.streaming import TEXT_SLOT, text_event

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def usage_of(generation: Generation) -> dict[str, int]:
    done = generation.completion
    prompt = done.prompt_tokens if done else generation.prompt_tokens
    produced = done.completion_tokens if done else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": produced,
        "total_tokens": prompt + produced,
    }


def finish_reason(generation: Generation) -> str:
    done = generation.completion
    return "length" if done is not None and done.finish_reason == "length" else "stop"


LogprobsShape = Callable[[list[TokenLogprob]], Any]


async def sse_text(
    generation: Generation,
    base: dict[str, Any],
    wrap: Callable[[Any], dict[str, Any]],
    first: dict[str, Any] | None,
    include_usage: bool,
    logprobs: LogprobsShape | None = None,
) -> AsyncIterator[bytes]:
    """SSE events: one per batch of tokens, the text spliced into a pre-serialized chunk.

    With `logprobs` (the request asked for them) each event is built whole, carrying the
    log-probabilities of its tokens in the API's shape.
    """
    text_chunk = text_event({**base, "choices": [wrap(TEXT_SLOT)]}, before="data: ", after="\n\n")

    def event(choice: dict[str, Any], **extra: Any) -> bytes:
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n".encode()

    if first is not None:
        yield event(first)
    try:
        async for chunks in generation:
            text = "".join(c.text for c in chunks)
            if logprobs is not None:
                found = of_chunks(chunks)
                if text or found:
                    yield event({**wrap(text), "logprobs": logprobs(found)})
            elif text:
                yield text_chunk(text)
    except AgentError as exc:
        yield sse_error(exc)
        return
    last = wrap("")
    last["finish_reason"] = finish_reason(generation)
    if "delta" in last:
        last["delta"] = {}
    yield event(last)
    yield _end(base, generation, include_usage)


async def sse_calls(
    generation: Generation,
    base: dict[str, Any],
    plan: ChatPlan,
    include_usage: bool,
    logprobs: LogprobsShape | None = None,
) -> AsyncIterator[bytes]:
    """SSE for a chat that may call tools: prose streams, calls come whole at the end.

    Log-probabilities, when asked for, ride on the last event: the tokens of a call are only
    known to be one once it is complete.
    """

    def event(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason, **extra}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    try:
        async for part in plan.stream(generation):
            if isinstance(part, str):
                yield event({"content": part})
            else:
                answer = part
    except AgentError as exc:
        yield sse_error(exc)
        return
    calls = answer.calls
    if answer.content:
        yield event({"content": answer.content})
    if calls:
        yield event({"tool_calls": [{"index": i, **c.as_openai()} for i, c in enumerate(calls)]})
    shaped = logprobs(answer.logprobs) if logprobs is not None else None
    yield event({}, "tool_calls" if calls else finish_reason(generation), logprobs=shaped)
    yield _end(base, generation, include_usage)


def _end(base: dict[str, Any], generation: Generation, include_usage: bool) -> bytes:
    """The usage chunk when asked for, then [DONE]."""
    if not include_usage:
        return b"data: [DONE]\n\n"
    usage = {**base, "choices": [], "usage": usage_of(generation)}
    return f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()


def sse_error(exc: AgentError) -> bytes:
    """An error event in OpenAI's shape and the end of the stream."""
    err = from_agent_error(exc)
    body = {"message": err.message, "type": "server_error", "param": None, "code": err.code}
    return f"data: {json.dumps({'error': body})}\n\ndata: [DONE]\n\n".encode()


def completion_offsets(start: int) -> LogprobsShape:
    """Legacy logprobs for successive stream events, text offsets running on from `start`."""
    offset = start

    def shape(found: list[TokenLogprob]) -> dict[str, Any]:
        nonlocal offset
        shaped = legacy_completion(found, offset)
        offset += sum(len(t) for t in shaped["tokens"])
        return shaped

    return shape
