"""llama.cpp engine for GGUF files, driven through llama-cpp-python's low-level token loop.

We call `Llama.generate` (evaluate + sample in C, one token per step) and do detokenizing and
stop strings ourselves, incrementally: `create_completion(stream=True)` re-decodes and
re-scans the whole output each token and streams several times slower than the model runs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.engines.base import Completion, EngineStats, LoadOptions, SamplingParams, TokenChunk
from agent.engines.decoding import (
    REPEAT_PENALTY_WINDOW,
    IncrementalDetokenizer,
    check_context,
    stream_tokens,
)
from agent.errors import EngineError, EngineUnavailable, ModelLoadError

_LOGGER = logging.getLogger(__name__)


def find_gguf(model_path: Path) -> Path:
    """The .gguf file: the path itself or the only .gguf in the folder."""
    if model_path.is_file():
        return model_path
    found = sorted(model_path.glob("*.gguf"))
    if len(found) != 1:
        raise ModelLoadError(f"expected one .gguf file in {model_path}, found {len(found)}")
    return found[0]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(
            "llama-cpp-python is not installed: pip install 'edgefleet[llamacpp]'"
        ) from exc
    return llama_cpp


class LlamaCppEngine:
    """GGUF models on llama.cpp (CPU, or CUDA/Metal/Vulkan when the build has it)."""

    name = "llamacpp"

    def __init__(self) -> None:
        self._llm: Any = None
        self._lib: Any = None
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self._stats = EngineStats()
        self._lock = threading.Lock()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Open the GGUF with the requested context, threads and GPU layers."""
        lib = _import_llama_cpp()
        self.unload()
        gguf = find_gguf(model_path) if model_path.exists() else model_path
        if not gguf.is_file():
            raise ModelLoadError(f"model file {gguf} does not exist")
        gpu_layers = options.gpu_layers if lib.llama_supports_gpu_offload() else 0
        started = time.perf_counter()
        try:
            llm = lib.Llama(
                model_path=str(gguf),
                n_ctx=options.context_length,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_gpu_layers=gpu_layers,
                last_n_tokens_size=REPEAT_PENALTY_WINDOW,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp cannot load {gguf}: {exc}") from exc
        self._llm, self._lib = llm, lib
        self._pieces, self._ends = {}, {}
        self._stats = EngineStats(
            load_seconds=time.perf_counter() - started,
            device="GPU" if gpu_layers else "CPU",
            extra={"gpu_layers": str(gpu_layers), "threads": str(llm.n_threads)},
        )
        _LOGGER.info("llama.cpp loaded %s (gpu_layers=%d)", gguf, gpu_layers)

    def count_tokens(self, text: str) -> int:
        """Tokens the prompt takes, BOS included when the model adds one."""
        return len(self._tokenize(text))

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Stream tokens for the prompt, then one Completion."""
        llm = self._loaded()
        prompt_ids = self._tokenize(prompt)
        check_context(len(prompt_ids), params.max_tokens, llm.n_ctx())
        with self._lock:
            llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
            try:
                steps = llm.generate(
                    prompt_ids,
                    top_k=params.top_k if params.top_k > 0 else llm.n_vocab(),
                    top_p=params.top_p,
                    min_p=0.0,
                    typical_p=1.0,
                    temp=max(params.temperature, 0.0),
                    repeat_penalty=params.repeat_penalty,
                )
                yield from stream_tokens(
                    steps,
                    detokenizer=IncrementalDetokenizer(self._piece),
                    is_end=self._is_end,
                    params=params,
                    prompt_tokens=len(prompt_ids),
                    cancel=cancel,
                    stats=self._stats,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise EngineError(f"llama.cpp generation failed: {exc}") from exc

    def unload(self) -> None:
        """Free the model and its context."""
        if self._llm is not None:
            close = getattr(self._llm, "close", None)
            if close is not None:
                close()
        self._llm = None

    def stats(self) -> EngineStats:
        """Counters since load."""
        return self._stats

    @property
    def context_length(self) -> int:
        """The context the model was opened with (0 when nothing is loaded)."""
        return int(self._llm.n_ctx()) if self._llm is not None else 0

    def _loaded(self) -> Any:
        if self._llm is None:
            raise EngineError("llamacpp: no model loaded; call load() first")
        return self._llm

    def _tokenize(self, text: str) -> list[int]:
        ids: list[int] = self._loaded().tokenize(text.encode("utf-8"), add_bos=True, special=True)
        return ids

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = bytes(self._llm.detokenize([token]))
        return piece

    def _is_end(self, token: int) -> bool:
        end = self._ends.get(token)
        if end is None:
            vocab = getattr(getattr(self._llm, "_model", None), "vocab", None)
            if vocab is not None and hasattr(self._lib, "llama_vocab_is_eog"):
                end = bool(self._lib.llama_vocab_is_eog(vocab, token))
            else:
                end = token == self._llm.token_eos()
            self._ends[token] = end
        return end
