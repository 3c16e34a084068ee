"""The continuous-batching pipeline in its own process: served from there, its death is an
error for the requests in flight (never a hang) and a new process for the next, and unloading
ends it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines import openvino_process
from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.openvino import OpenVinoEngine
from agent.engines.openvino_process import PipelineProcess, PipelineUnavailable
from agent.errors import EngineError
from tests.support.engines import reference_engine
from tests.support.streams import collect

pytest.importorskip("openvino_genai")

PROMPT = "<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)


@pytest.fixture
def engine(tiny_model_dir: Path) -> Iterator[OpenVinoEngine]:
    options = LoadOptions(threads=1, context_length=256, parallel=2)
    with reference_engine(tiny_model_dir, "openvino", "openvino-int8", options) as engine:
        assert isinstance(engine, OpenVinoEngine)
        yield engine


def _process(engine: OpenVinoEngine) -> PipelineProcess:
    assert engine.scheduler is not None
    pipe = engine.scheduler._pipe
    assert isinstance(pipe, PipelineProcess)
    return pipe


def test_the_pipeline_runs_in_a_child_process_and_unloading_ends_it(
    engine: OpenVinoEngine,
) -> None:
    child = _process(engine)._process
    assert child.poll() is None and child.pid != os.getpid()
    text, done = collect(engine.generate(PROMPT, GREEDY))
    assert text and done.completion_tokens > 0
    engine.unload()
    assert child.poll() == 0  # told to stop, it did


def test_a_dead_pipeline_process_fails_its_requests_and_is_started_again(
    engine: OpenVinoEngine,
) -> None:
    long = SamplingParams(max_tokens=200, temperature=0.0, repeat_penalty=1.0)
    stream = engine.generate(PROMPT, long)
    first = next(stream)
    assert isinstance(first, TokenChunk)
    dead = _process(engine)._process
    dead.kill()
    with pytest.raises(EngineError, match="the OpenVINO process exited"):
        for item in stream:
            assert not isinstance(item, Completion)
    assert collect(engine.generate(PROMPT, GREEDY))[1].completion_tokens > 0  # a new process
    assert _process(engine)._process.pid != dead.pid


def test_a_hung_pipeline_process_is_stopped_and_started_again(
    engine: OpenVinoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openvino_process, "ANSWER_TIMEOUT_S", 1.0)
    long = SamplingParams(max_tokens=200, temperature=0.0, repeat_penalty=1.0)
    stream = engine.generate(PROMPT, long)
    assert isinstance(next(stream), TokenChunk)
    hung = _process(engine)._process
    os.kill(hung.pid, signal.SIGSTOP)  # it will not answer the next step
    with pytest.raises(EngineError, match="did not answer in 1 s and was stopped"):
        for item in stream:
            assert not isinstance(item, Completion)
    assert hung.poll() == -signal.SIGKILL
    assert collect(engine.generate(PROMPT, GREEDY))[1].completion_tokens > 0


def test_a_folder_the_pipeline_cannot_load_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(PipelineUnavailable, match=r"\S"):
        PipelineProcess(tmp_path, device="CPU", slots=2, properties={})
