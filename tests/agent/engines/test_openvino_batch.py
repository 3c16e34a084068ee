"""The OpenVINO batch driver over a scripted pipeline: tokens to chunks, finishes, stops that
free the pipeline's request, a failed step, a pipeline process started again, log-probabilities.

The real pipeline (in its child process) is tested in test_openvino_process.py and
test_openvino_batching.py; here the driver's own decisions are pinned without OpenVINO.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from agent.engines.base import SamplingParams, TokenChunk
from agent.engines.decoding import IncrementalDetokenizer
from agent.engines.openvino_batch import OpenVinoBatchDriver
from agent.engines.openvino_process import NewTokens, StepResult
from agent.engines.scheduled import generate_scheduled
from agent.errors import EngineError
from tests.support.streams import collect

WORDS = ["", " alpha", " beta", " gamma", " delta", " STOP", " omega"]
END = 0


class ScriptedPipeline:
    """Each request yields token 1, 2, 3, ... one per step (the n-th with log-probability
    -n/10); finishes on its own at `finish_at`, with END when `end_token` is set."""

    def __init__(self, finish_at: int = 100) -> None:
        self.finish_at = finish_at
        self.end_token = False
        self.alive = True
        self.produced: dict[int, int] = {}
        self.cancelled: list[int] = []
        self.fail_next_step = False
        self.restarts = 0
        self.closed = False

    def add(self, request_id: int, prompt: list[int], params: SamplingParams) -> None:
        if not self.alive:
            raise EngineError("the OpenVINO process exited (exit code -9)")
        self.produced[request_id] = 0

    def step(self) -> StepResult:
        if self.fail_next_step:
            self.fail_next_step = False
            raise EngineError("OpenVINO step failed: out of blocks")
        out: dict[int, NewTokens] = {}
        for request_id in list(self.produced):
            self.produced[request_id] += 1
            n = self.produced[request_id]
            running = n < self.finish_at
            token = END if not running and self.end_token else (n - 1) % (len(WORDS) - 1) + 1
            out[request_id] = NewTokens([token], [-n / 10], running)
            if not running:
                del self.produced[request_id]
        return StepResult(out, cache_usage=0.25)

    def cancel(self, request_id: int) -> None:
        self.cancelled.append(request_id)
        self.produced.pop(request_id, None)

    def restart(self) -> None:
        self.restarts += 1
        self.alive = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def pipeline() -> ScriptedPipeline:
    return ScriptedPipeline()


def _driver(pipeline: ScriptedPipeline) -> OpenVinoBatchDriver:
    return OpenVinoBatchDriver(
        cast(Any, pipeline),
        n_slots=2,
        detokenizer=lambda: IncrementalDetokenizer(lambda t: WORDS[t].encode()),
        is_end=lambda t: t == END,
        token_bytes=lambda t: WORDS[t].encode(),
    )


@pytest.fixture
def driver(pipeline: ScriptedPipeline) -> Iterator[OpenVinoBatchDriver]:
    driver = _driver(pipeline)
    yield driver
    driver.close()


def _run(driver: OpenVinoBatchDriver, params: SamplingParams) -> tuple[str, Any]:
    return collect(generate_scheduled(driver, [7, 8, 9], params, None))


def test_tokens_become_text_and_max_tokens_frees_the_request(
    driver: OpenVinoBatchDriver, pipeline: ScriptedPipeline
) -> None:
    text, done = _run(driver, SamplingParams(max_tokens=3, temperature=0.0))
    assert text == " alpha beta gamma"
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("length", 3, 3)
    assert pipeline.cancelled == [0]  # still running in the pipeline: let go at once
    assert driver.stats().kv_usage == 0.25 and driver.stats().running == 0


def test_a_stop_string_ends_the_stream_and_the_pipelines_request(
    driver: OpenVinoBatchDriver, pipeline: ScriptedPipeline
) -> None:
    text, done = _run(driver, SamplingParams(max_tokens=50, temperature=0.0, stop=(" STOP",)))
    assert (text, done.finish_reason) == (" alpha beta gamma delta", "stop")
    assert pipeline.cancelled == [0]


def test_a_request_the_pipeline_finishes_is_not_cancelled(pipeline: ScriptedPipeline) -> None:
    pipeline.finish_at = 2
    driver = _driver(pipeline)
    try:
        text, done = _run(driver, SamplingParams(max_tokens=50, temperature=0.0))
    finally:
        driver.close()
    assert (text, done.finish_reason) == (" alpha beta", "stop")
    assert pipeline.cancelled == [] and pipeline.closed


def test_a_failed_step_fails_the_stream_and_cancels_its_request(
    driver: OpenVinoBatchDriver, pipeline: ScriptedPipeline
) -> None:
    pipeline.fail_next_step = True
    with pytest.raises(EngineError, match="OpenVINO generation failed: .*out of blocks"):
        _run(driver, SamplingParams(max_tokens=5, temperature=0.0))
    assert pipeline.cancelled == [0]
    assert _run(driver, SamplingParams(max_tokens=2, temperature=0.0))[0] == " alpha beta"


def test_a_dead_pipeline_is_started_again_for_the_next_request(
    driver: OpenVinoBatchDriver, pipeline: ScriptedPipeline
) -> None:
    pipeline.alive = False
    assert _run(driver, SamplingParams(max_tokens=2, temperature=0.0))[0] == " alpha beta"
    assert pipeline.restarts == 1


def test_each_token_carries_its_log_probability_only_when_asked(
    driver: OpenVinoBatchDriver, pipeline: ScriptedPipeline
) -> None:
    pipeline.finish_at, pipeline.end_token = 4, True
    asked = list(generate_scheduled(driver, [7], SamplingParams(max_tokens=9, logprobs=0), None))
    chunks = [c for c in asked if isinstance(c, TokenChunk)]
    assert [c.text for c in chunks] == [" alpha", " beta", " gamma"]
    found = [c.logprob for c in chunks]
    assert [(f.token, f.logprob, f.top) for f in found if f is not None] == [
        (b" alpha", -0.1, ()),
        (b" beta", -0.2, ()),
        (b" gamma", -0.3, ()),
    ]  # the end token (the 4th) is not one of them
    plain = list(generate_scheduled(driver, [7], SamplingParams(max_tokens=9), None))
    assert [c.logprob for c in plain if isinstance(c, TokenChunk)] == [None, None, None]
