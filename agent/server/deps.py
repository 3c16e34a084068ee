"""What every route needs: the runtime, the settings, the metrics, and model-name checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from agent.engines.base import SamplingParams
from agent.keepalive import parse_keep_alive
from agent.model_loading import LoadedModel
from agent.runtime import ModelRuntime, NoModel
from agent.server.errors import ApiError, ModelNotFound
from agent.server.limits import RequestLimits
from agent.server.metrics import ServingMetrics


def get_runtime(request: Request) -> ModelRuntime:
    """The app's ModelRuntime."""
    runtime: ModelRuntime = request.app.state.runtime
    return runtime


def get_metrics(request: Request) -> ServingMetrics:
    """The app's ServingMetrics."""
    metrics: ServingMetrics = request.app.state.metrics
    return metrics


def get_limits(request: Request) -> RequestLimits:
    """The app's RequestLimits."""
    limits: RequestLimits = request.app.state.limits
    return limits


RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
LimitsDep = Annotated[RequestLimits, Depends(get_limits)]


def served_model(runtime: ModelRuntime, name: str | None) -> LoadedModel:
    """The model a request names (loaded or idle); 404 for another name, 503 for none."""
    known = runtime.known
    if known is None:
        raise NoModel("no model is loaded yet; wait for /readyz or start with --model PATH")
    if name and name not in known.aliases:
        raise ModelNotFound(name, known.ref)
    return known


def keep_alive_seconds(value: str | float | None) -> float | None:
    """A request's keep_alive in seconds, None when absent; 400 when malformed."""
    if value is None or value == "":
        return None
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="keep_alive") from exc


def nonempty_prompt(prompt: str, param: str = "prompt") -> str:
    """The prompt an engine gets; 400 when it is empty (llama.cpp cannot evaluate nothing)."""
    if not prompt:
        raise ApiError(400, "the prompt is empty; send some text", param=param)
    return prompt


def stop_tuple(stop: str | Sequence[str] | None, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Stop strings from a request (a string or a list) plus the template's own."""
    given = [stop] if isinstance(stop, str) else list(stop or [])
    return tuple(dict.fromkeys(s for s in [*given, *extra] if s))


def sampling(
    *,
    max_tokens: int | None,
    stop: tuple[str, ...],
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repeat_penalty: float | None = None,
    seed: int | None = None,
) -> SamplingParams:
    """SamplingParams from request fields; None (or a field not given) keeps the engine default."""
    fields: dict[str, Any] = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repeat_penalty": repeat_penalty,
        "seed": seed,
        "max_tokens": max_tokens,
    }
    return SamplingParams(stop=stop, **{k: v for k, v in fields.items() if v is not None})


class SamplingSource(Protocol):
    """The sampling fields a request body carries (OpenAI's, Ollama's options)."""

    @property
    def temperature(self) -> float | None: ...
    @property
    def top_p(self) -> float | None: ...
    @property
    def top_k(self) -> int | None: ...
    @property
    def repeat_penalty(self) -> float | None: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def stop(self) -> str | Sequence[str] | None: ...


def sampling_of(
    fields: SamplingSource,
    *,
    max_tokens: int | None,
    extra_stops: Sequence[str] = (),
    logprobs: int | None = None,
) -> SamplingParams:
    """SamplingParams from a body's sampling fields, the template's stop strings added."""
    params = sampling(
        max_tokens=max_tokens,
        temperature=fields.temperature,
        top_p=fields.top_p,
        top_k=fields.top_k,
        repeat_penalty=fields.repeat_penalty,
        seed=fields.seed,
        stop=stop_tuple(fields.stop, extra_stops),
    )
    return replace(params, logprobs=logprobs)


def fill_context(max_tokens: int | None) -> Callable[[int, int], int] | None:
    """None keeps the request's max_tokens; else a chooser for the rest of the context."""
    if max_tokens is not None and max_tokens > 0:
        return None

    def remaining(prompt_tokens: int, context: int) -> int:
        # At least one token, so a prompt that fills the context is reported as an overflow.
        return max(context - prompt_tokens, 1)

    return remaining
