"""openvino-genai's ContinuousBatchingPipeline in a child process of its own.

The pipeline's Python binding holds the GIL for the whole of `step()` (openvino-genai 2026.4:
no `gil_scoped_release`), so in the agent's process the event loop, the tokenizer and every
SSE write waited for each step: a 1 ms ticker thread got one tick per step, and under load
first tokens came seconds late. Here the pipeline runs in a child process; the batching
driver's thread talks to it over a socketpair and, while a step runs, waits in `recv`, which
releases the GIL.

The child is `python -m agent.engines.openvino_process FD` (not multiprocessing's spawn, which
would import the agent's main module again in the child). One request at a time, from the
driver's thread only: `add`, `step`, `cancel`, `close`. The child answers each; it ends when
told to, or when the socket closes (the agent exited, however it exited).
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

from agent.engines.base import SamplingParams
from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)
KV_CACHE_GB = 1  # SchedulerConfig.cache_size: the paged KV pool, shared by all sequences
STOP_SECONDS = 10.0  # how long close() waits for the child before killing it
# How long the child may take to answer: building the pipeline (compiling for a GPU can take
# minutes without a cache), and one add, step or cancel (a step is a fraction of a second; a
# 256-token prompt chunk on a slow CPU a few seconds). A child past it is hung: it is killed.
LOAD_TIMEOUT_S = 900.0
ANSWER_TIMEOUT_S = 120.0


class PipelineUnavailable(EngineError):
    """The pipeline could not be built for this model and device (the child said why)."""


class NewTokens(NamedTuple):
    """What one step produced for one request."""

    ids: list[int]
    # Each token's log-probability under the model's own distribution (before temperature and
    # penalties); empty unless the request asked (SamplingParams.logprobs).
    logprobs: list[float]
    running: bool  # False once the pipeline finished it (its EOS, max_new_tokens, a stop)


@dataclass(frozen=True)
class StepResult:
    """What one step produced, per request id."""

    requests: dict[int, NewTokens]
    cache_usage: float  # share of the KV pool in use, 0..1


class PipelineProcess:
    """The parent's end: starts the child, which builds the pipeline, and drives it."""

    def __init__(
        self, folder: Path, *, device: str, slots: int, properties: dict[str, Any]
    ) -> None:
        self._args = (str(folder), device, slots, properties)
        self.eos_token_id: int | None = None
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        self._conn = Connection(ours.detach())
        try:  # the settings go first; "ready" comes back, or why not
            _, self.eos_token_id = self._call(self._args, LOAD_TIMEOUT_S)
        except EngineError as exc:
            self.close()
            raise PipelineUnavailable(str(exc)) from exc

    @property
    def alive(self) -> bool:
        """Whether the child is running (False once it died or was closed)."""
        return self._process.poll() is None

    def restart(self) -> None:
        """Start a new child after this one died; PipelineUnavailable when it cannot load."""
        self.close()
        self._start()

    def add(self, request_id: int, prompt: list[int], params: SamplingParams) -> None:
        """Start a generation; EngineError when the pipeline refuses it."""
        self._call(("add", request_id, prompt, params))

    def cancel(self, request_id: int) -> None:
        """Drop a generation (nothing when it has already finished)."""
        self._call(("cancel", request_id))

    def step(self) -> StepResult:
        """Run one step of every running generation."""
        _, read, usage = self._call(("step",))
        return StepResult({rid: NewTokens(*new) for rid, new in read.items()}, usage)

    def close(self) -> None:
        """Stop the child and wait for it (killed if it does not stop)."""
        if self.alive:
            try:
                self._conn.send(("close",))
            except OSError:
                pass
        try:
            self._process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _LOGGER.warning("the OpenVINO process did not stop; killing it")
            self._stop()
        self._conn.close()

    def _stop(self) -> None:
        self._process.kill()
        self._process.wait()

    def _call(self, message: tuple[Any, ...], timeout: float | None = None) -> tuple[Any, ...]:
        timeout = ANSWER_TIMEOUT_S if timeout is None else timeout
        try:
            self._conn.send(message)
            answered = self._conn.poll(timeout)
            if answered:
                reply: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as exc:
            try:
                self._process.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            raise EngineError(
                f"the OpenVINO process exited (exit code {self._process.returncode}); "
                "the next request starts it again"
            ) from exc
        if not answered:
            self._stop()
            raise EngineError(
                f"the OpenVINO process did not answer in {timeout:.0f} s and was stopped; "
                "the next request starts it again"
            )
        if reply[0] == "error":
            raise EngineError(str(reply[1]))
        return reply


def generation_config(genai: Any, params: SamplingParams) -> Any:
    """GenerationConfig for our SamplingParams (greedy when temperature is 0)."""
    config = genai.GenerationConfig()
    config.max_new_tokens = params.max_tokens
    config.do_sample = params.temperature > 0
    if config.do_sample:
        config.temperature = params.temperature
        config.top_p = params.top_p if 0 < params.top_p <= 1 else 1.0
        config.top_k = params.top_k if params.top_k > 0 else 0
        config.rng_seed = params.seed if params.seed is not None else random.getrandbits(31)
    config.repetition_penalty = params.repeat_penalty
    if params.stop:
        # genai stops on them too; kept in the output so our own matcher sees and cuts them
        config.stop_strings = set(params.stop)
        config.include_stop_str_in_output = True
    config.apply_chat_template = False  # prompts arrive already templated
    if params.logprobs is not None:
        config.logprobs = 1  # the chosen token's own; genai gives no alternatives
    if params.constraint is not None:  # genai's structured output: a grammar mask per sequence
        schema = params.constraint.schema or '{"type": "object"}'
        config.structured_output_config = genai.StructuredOutputConfig(json_schema=schema)
    return config


def scheduler_config(genai: Any, n_slots: int) -> Any:
    """At most `n_slots` sequences, prefix caching on, prompts split to fit next to decodes."""
    config = genai.SchedulerConfig()
    config.max_num_seqs = n_slots
    config.cache_size = KV_CACHE_GB
    config.enable_prefix_caching = True
    config.dynamic_split_fuse = True
    config.max_num_batched_tokens = 256
    return config


def serve(conn: Connection, folder: str, device: str, slots: int, properties: Any) -> None:
    """The child: build the pipeline, answer "ready" (or why not), then serve the parent."""
    import numpy as np
    import openvino
    import openvino_genai as genai

    try:
        pipe = genai.ContinuousBatchingPipeline(
            folder, scheduler_config(genai, slots), device, properties
        )
        eos = pipe.get_config().eos_token_id
    except Exception as exc:  # RuntimeError from genai; AttributeError from an old genai
        conn.send(("error", str(exc)))
        return
    eos = int(eos) if eos is not None and int(eos) >= 0 else None
    conn.send(("ready", eos))
    handles: dict[int, Any] = {}
    scoring: set[int] = set()  # requests that asked for log-probabilities
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        op = message[0]
        if op == "close":
            return
        try:
            if op == "add":
                _, request_id, prompt, params = message
                config = generation_config(genai, params)
                if eos is not None:  # a batched request does not inherit the model's EOS
                    config.eos_token_id = eos
                ids = openvino.Tensor(np.asarray([prompt], dtype=np.int64))
                handles[request_id] = pipe.add_request(request_id, ids, config)
                if params.logprobs is not None:
                    scoring.add(request_id)
                conn.send(("ok",))
            elif op == "cancel":
                handle = handles.pop(message[1], None)
                scoring.discard(message[1])
                if handle is not None:
                    handle.cancel()
                conn.send(("ok",))
            else:
                pipe.step()
                conn.send(("stepped", _read(handles, scoring), _cache_usage(pipe)))
        except Exception as exc:  # genai raises RuntimeError and friends; the loop goes on
            _LOGGER.exception("OpenVINO %s failed", op)
            conn.send(("error", f"OpenVINO {op} failed: {exc}"))


def _read(
    handles: dict[int, Any], scoring: set[int]
) -> dict[int, tuple[list[int], list[float], bool]]:
    """NewTokens (as a plain tuple) of every handle, log-probabilities only for those in
    `scoring` (genai reports 0.0 for the others); finished ones are let go."""
    out: dict[int, tuple[list[int], list[float], bool]] = {}
    for request_id, handle in list(handles.items()):
        tokens: list[int] = []
        logprobs: list[float] = []
        if handle.can_read():
            for output in handle.read().values():
                tokens.extend(int(t) for t in output.generated_ids)
                if request_id in scoring:
                    logprobs.extend(float(p) for p in output.generated_log_probs)
        running = str(handle.get_status()).endswith("RUNNING")
        if not running:
            del handles[request_id]
            scoring.discard(request_id)
        out[request_id] = (tokens, logprobs, running)
    return out


def _cache_usage(pipe: Any) -> float:
    try:
        return min(1.0, max(0.0, float(pipe.get_metrics().cache_usage) / 100.0))
    except (AttributeError, RuntimeError):
        return 0.0


def main() -> None:
    """The child's entry: the socket's fd on the command line, the pipeline's settings first."""
    conn = Connection(int(sys.argv[1]))
    folder, device, slots, properties = conn.recv()
    serve(conn, folder, device, slots, properties)


if __name__ == "__main__":
    main()
