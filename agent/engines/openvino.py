"""OpenVINO engine: continuous batching on CPU and GPU, openvino-genai's LLMPipeline on NPU.

On CPU/GPU the engine opens a `ContinuousBatchingPipeline` (paged attention, prefix cache) in a
child process, driven by `OpenVinoBatchDriver` from one thread, and the runtime sends every
request through it; the prompt is tokenized here with the model's OpenVINO tokenizer.
Elsewhere, or when the pipeline cannot be built for the model, `LLMPipeline.generate` runs in
a thread; a StreamerBase subclass passes each token id through a queue to the caller's
iterator and answers STOP once the caller is done (stop string, cancel, or iterator closed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.engines.base import Completion, EngineStats, LoadOptions, SamplingParams, TokenChunk
from agent.engines.decoding import (
    Detokenizer,
    IncrementalDetokenizer,
    WindowDetokenizer,
    check_context,
    stream_tokens,
)
from agent.engines.hftok import HFTokenizer, find_tokenizer
from agent.engines.openvino_batch import OpenVinoBatchDriver
from agent.engines.openvino_process import PipelineProcess, generation_config
from agent.engines.registry import import_runtime
from agent.engines.scheduled import generate_scheduled
from agent.engines.sizing import MAX_DEFAULT_PARALLEL
from agent.errors import EngineError, EngineUnavailable, ModelLoadError

_LOGGER = logging.getLogger(__name__)
_DONE = object()
JOIN_SECONDS = 30.0  # how long closing a stream waits for the pipeline thread to return
BATCHING_DEVICES = ("CPU", "GPU")  # where ContinuousBatchingPipeline runs
# CPU settings under which a sequence's greedy output does not depend on what else is in its
# batch: f32 instead of bf16 (the default on CPUs with AVX512_BF16), and no dynamic
# quantization of activations (INT8 weights then multiply f32 activations). With the defaults,
# SmolLM2's INT8 IR branched at a near-tie after 29-62 tokens in 3 of 6 prompts batched vs
# alone; with these, none did, and SmolLM2 answered "The capital of France is Paris." where bf16
# began "La femme de France". The cost, 2 threads: about the same CPU per token for one
# stream, twice as much at 8 streams (docs/engines.md, "Batching"); so it is the default
# (`LoadOptions.batch_invariant`, the agent setting `batch_invariant`), and can be turned off.
BATCH_INVARIANT_CPU: dict[str, Any] = {
    "INFERENCE_PRECISION_HINT": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
}


def _import_genai() -> Any:
    return import_runtime("openvino")


class OpenVinoEngine:
    """OpenVINO IR models (INT8/INT4/FP16) through openvino-genai."""

    name = "openvino"
    constrained_decoding = True  # OutputConstraint through genai's StructuredOutputConfig
    # genai gives the chosen token's log-probability only ("currently only single top logprob
    # can be returned"): requests asking for alternatives are refused.
    top_logprobs_limit = 0

    def __init__(self) -> None:
        self._genai: Any = None
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._hf: HFTokenizer | None = None
        self._eos: frozenset[int] = frozenset()
        self._context = 0
        self._stats = EngineStats()
        self._lock = threading.Lock()
        self.scheduler: OpenVinoBatchDriver | None = None

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Compile the model for the device the probe chose."""
        genai = _import_genai()
        self.unload()
        folder = model_path if model_path.is_dir() else model_path.parent
        if not (folder / "openvino_model.xml").is_file():
            raise ModelLoadError(f"no openvino_model.xml in {folder}")
        properties: dict[str, Any] = {}
        if options.threads and options.device.upper() == "CPU":
            properties["INFERENCE_NUM_THREADS"] = options.threads
        if options.batch_invariant and options.device.upper() == "CPU":
            properties.update(BATCH_INVARIANT_CPU)
        if options.cache_dir is not None and options.device.upper() != "CPU":
            properties["CACHE_DIR"] = str(options.cache_dir)
        started = time.perf_counter()
        slots = options.parallel if options.parallel > 0 else MAX_DEFAULT_PARALLEL
        batching = _batching_pipeline(folder, options, slots, properties)
        try:
            if batching is not None:  # the pipeline is in its process; tokenize here
                pipe, tokenizer = batching, genai.Tokenizer(str(folder))
                eos = batching.eos_token_id
            else:
                pipe = genai.LLMPipeline(str(folder), options.device.upper(), **properties)
                tokenizer, eos = pipe.get_tokenizer(), pipe.get_generation_config().eos_token_id
        except RuntimeError as exc:
            if batching is not None:
                batching.close()
            raise ModelLoadError(
                f"OpenVINO cannot load {folder} on {options.device}: {exc}"
            ) from exc
        self._genai, self._pipe, self._tokenizer = genai, pipe, tokenizer
        try:
            self._hf = HFTokenizer(find_tokenizer(folder))
        except (ModelLoadError, EngineUnavailable):
            self._hf = None  # fall back to decoding short windows with the OpenVINO tokenizer
        self._eos = frozenset({int(eos)} if eos is not None and int(eos) >= 0 else set())
        self._context = options.context_length
        self._stats = EngineStats(
            load_seconds=time.perf_counter() - started,
            device=options.device.upper(),
            extra={
                "parallel": str(slots if batching else 1),
                "pipeline": "continuous batching" if batching else "LLMPipeline",
            },
        )
        if batching is not None:
            self.scheduler = OpenVinoBatchDriver(
                batching,
                n_slots=slots,
                stats=self._stats,
                detokenizer=self._detokenizer,
                is_end=self._eos.__contains__,
                token_bytes=self._token_bytes,
            )
        _LOGGER.info(
            "OpenVINO loaded %s on %s (%s)", folder, options.device, self._stats.extra["pipeline"]
        )

    @property
    def exposes_logprobs(self) -> bool:
        """Through continuous batching only: LLMPipeline's streamer hands out token ids alone."""
        return self.scheduler is not None

    def count_tokens(self, text: str) -> int:
        """Tokens the prompt takes with the pipeline's own tokenizer."""
        return int(self._encode(text).input_ids.get_shape()[1])

    def tokenize(self, text: str) -> list[int]:
        """The prompt's token ids with the pipeline's own tokenizer."""
        return [int(t) for t in self._encode(text).input_ids.data[0]]

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Stream tokens for the prompt, then one Completion."""
        pipe = self._loaded()
        if self.scheduler is not None:
            yield from self._generate_batched(prompt, params, cancel)
            return
        inputs = self._encode(prompt)
        prompt_tokens = int(inputs.input_ids.get_shape()[1])
        check_context(prompt_tokens, params.max_tokens, self._context)
        config = generation_config(self._genai, params)
        with self._lock:
            yield from stream_tokens(
                self._run(pipe, inputs, config),
                detokenizer=self._detokenizer(),
                is_end=self._eos.__contains__,
                params=params,
                prompt_tokens=prompt_tokens,
                cancel=cancel,
                stats=self._stats,
            )

    def _generate_batched(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None
    ) -> Iterator[TokenChunk | Completion]:
        """Through the continuous-batching driver; a cancelled caller sees no more tokens."""
        assert self.scheduler is not None
        ids = self.tokenize(prompt)
        check_context(len(ids), params.max_tokens, self._context)
        yield from generate_scheduled(self.scheduler, ids, params, cancel)

    def unload(self) -> None:
        """Stop the batching driver and drop the pipeline."""
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None
        self._pipe = self._tokenizer = self._hf = None

    def stats(self) -> EngineStats:
        """Counters since load."""
        return self._stats

    @property
    def context_length(self) -> int:
        """The context the agent asked for at load."""
        return self._context

    def _run(self, pipe: Any, inputs: Any, config: Any) -> Iterator[int]:
        """Run generate in a thread and yield the streamed token ids as they arrive."""
        tokens: queue.Queue[object] = queue.Queue()
        halt = threading.Event()
        genai = self._genai

        class _Bridge(genai.StreamerBase):  # type: ignore[misc, name-defined]
            def write(self, token: int | Sequence[int]) -> Any:
                for t in [token] if isinstance(token, int) else token:
                    tokens.put(int(t))
                status = genai.StreamingStatus
                return status.STOP if halt.is_set() else status.RUNNING

            def end(self) -> None:
                pass

        def work() -> None:
            try:
                pipe.generate(inputs, config, _Bridge())
            except Exception as exc:  # genai raises RuntimeError and friends
                tokens.put(exc)
            finally:
                tokens.put(_DONE)

        thread = threading.Thread(target=work, name="openvino-generate", daemon=True)
        thread.start()
        try:
            while (item := tokens.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise EngineError(f"OpenVINO generation failed: {item}") from item
                assert isinstance(item, int)
                yield item
        finally:
            halt.set()
            thread.join(JOIN_SECONDS)

    def _detokenizer(self) -> Detokenizer:
        if self._hf is not None:
            return IncrementalDetokenizer(self._hf.token_bytes)
        tokenizer = self._tokenizer
        return WindowDetokenizer(lambda ids: str(tokenizer.decode(list(ids))))

    def _token_bytes(self, token: int) -> bytes:
        if self._hf is not None:
            return self._hf.token_bytes(token)
        return str(self._tokenizer.decode([token])).encode()

    def _encode(self, text: str) -> Any:
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise EngineError("openvino: no model loaded; call load() first")
        return tokenizer.encode(text)

    def _loaded(self) -> Any:
        if self._pipe is None:
            raise EngineError("openvino: no model loaded; call load() first")
        return self._pipe


def _batching_pipeline(
    folder: Path, options: LoadOptions, slots: int, properties: dict[str, Any]
) -> PipelineProcess | None:
    """A ContinuousBatchingPipeline in its own process, or None where it does not run (NPU,
    parallel 1, the pipeline refused the model)."""
    if options.device.upper() not in BATCHING_DEVICES or options.parallel == 1:
        return None
    try:
        return PipelineProcess(
            folder, device=options.device.upper(), slots=slots, properties=properties
        )
    except EngineError as exc:
        _LOGGER.warning(
            "OpenVINO continuous batching unavailable for %s (%s); one at a time", folder, exc
        )
        return None
