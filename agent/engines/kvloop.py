"""The generation loop over a KV-cached decoder, shared by the ONNX Runtime and TensorRT engines.

A backend supplies a `Stepper` (feed tokens, get the last position's logits, the cache kept
inside); `KVLoopEngine` supplies the tokenizer, sampling, stop strings, cancellation and stats,
and constrained decoding (agent/engines/constrained.py) for requests that carry a constraint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.engines.base import (
    Completion,
    EngineStats,
    LoadOptions,
    SamplingParams,
    TokenChunk,
    find_model_file,
)
from agent.engines.constrained import GrammarCompiler, TokenPicker, llguidance_installed
from agent.engines.decoding import IncrementalDetokenizer, Sampler, check_context, stream_tokens
from agent.engines.hftok import HFTokenizer, find_tokenizer
from agent.errors import EngineError, ModelLoadError

Logits = npt.NDArray[np.floating]


class Stepper(Protocol):
    """One decoder with its own KV cache."""

    def reset(self) -> None:
        """Forget the cache (a new sequence starts)."""
        ...

    def step(self, token_ids: Sequence[int]) -> Logits:
        """Append tokens to the sequence and return the logits of the last one (vocab,)."""
        ...

    def close(self) -> None:
        """Free the backend's resources."""
        ...


def token_steps(
    stepper: Stepper, prompt_ids: Sequence[int], sampler: TokenPicker
) -> Generator[int, None, None]:
    """Prefill the prompt, then yield one sampled token per step, feeding each back lazily."""
    stepper.reset()
    sampler.remember(prompt_ids)
    logits = stepper.step(prompt_ids)
    while True:
        token = sampler.sample(logits)
        yield token
        logits = stepper.step([token])


def model_context_length(folder: Path, default: int) -> int:
    """max_position_embeddings from config.json next to the model, else the default."""
    for config in (folder / "config.json", folder.parent / "config.json"):
        if config.is_file():
            value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
            if isinstance(value, int) and value > 0:
                return value
    return default


def find_onnx(model_path: Path) -> Path:
    """The decoder's .onnx file: the path itself, model.onnx, or the only .onnx in the folder."""
    return find_model_file(model_path, ".onnx", preferred="model.onnx")


class KVLoopEngine:
    """Engine protocol over a Stepper; subclasses implement `_open` and set `name`."""

    name = "kvloop"

    def __init__(self) -> None:
        self._stepper: Stepper | None = None
        self._tokenizer: HFTokenizer | None = None
        self._tokenizer_file: Path | None = None
        self._grammars: GrammarCompiler | None = None  # built at the first constrained request
        self._context = 0
        self._stats = EngineStats()
        self._lock = threading.Lock()
        self._grammar_lock = threading.Lock()

    def _open(self, model_path: Path, options: LoadOptions) -> tuple[Stepper, str]:
        """Build the backend's stepper; returns it and the device it runs on."""
        raise NotImplementedError

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Load the tokenizer and the decoder."""
        self.unload()
        started = time.perf_counter()
        if not model_path.exists():
            raise ModelLoadError(f"model path {model_path} does not exist")
        stepper, device = self._open(model_path, options)  # checks the library first
        try:
            tokenizer_file = find_tokenizer(model_path)
            tokenizer = HFTokenizer(tokenizer_file)
        except Exception:
            stepper.close()
            raise
        folder = model_path if model_path.is_dir() else model_path.parent
        self._context = min(options.context_length, model_context_length(folder, 1 << 30))
        self._stepper, self._tokenizer = stepper, tokenizer
        self._tokenizer_file = tokenizer_file
        self._stats = EngineStats(load_seconds=time.perf_counter() - started, device=device)

    def count_tokens(self, text: str) -> int:
        """Tokens the prompt takes, BOS included if the tokenizer adds one."""
        return len(self._loaded()[1].encode(text))

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Stream tokens for the prompt, then one Completion."""
        stepper, tokenizer = self._loaded()
        prompt_ids = tokenizer.encode(prompt)
        check_context(len(prompt_ids), params.max_tokens, self._context)
        picker: TokenPicker = Sampler(params)
        if params.constraint is not None:
            picker = self._grammar_compiler(tokenizer).sampler(picker, params.constraint)
        with self._lock:
            steps = token_steps(stepper, prompt_ids, picker)
            yield from stream_tokens(
                _guarded(steps, self.name),
                detokenizer=IncrementalDetokenizer(tokenizer.token_bytes),
                is_end=tokenizer.eos_ids.__contains__,
                params=params,
                prompt_tokens=len(prompt_ids),
                cancel=cancel,
                stats=self._stats,
            )

    @property
    def constrained_decoding(self) -> bool:
        """Whether SamplingParams.constraint is applied: with llguidance installed."""
        return llguidance_installed()

    def _grammar_compiler(self, tokenizer: HFTokenizer) -> GrammarCompiler:
        """The model's tokenizer for llguidance, read at the first constrained request."""
        with self._grammar_lock:
            if self._grammars is None:
                assert self._tokenizer_file is not None
                self._grammars = GrammarCompiler(self._tokenizer_file, tokenizer.eos_ids)
            return self._grammars

    def unload(self) -> None:
        """Drop the decoder and tokenizer."""
        if self._stepper is not None:
            self._stepper.close()
        self._stepper = self._tokenizer = None
        self._tokenizer_file = self._grammars = None

    def stats(self) -> EngineStats:
        """Counters since load."""
        return self._stats

    @property
    def context_length(self) -> int:
        """Tokens of context: the smaller of the load option and the model's own limit."""
        return self._context

    def _loaded(self) -> tuple[Stepper, HFTokenizer]:
        if self._stepper is None or self._tokenizer is None:
            raise EngineError(f"{self.name}: no model loaded; call load() first")
        return self._stepper, self._tokenizer


def _guarded(steps: Generator[int, None, None], engine: str) -> Iterator[int]:
    """Translate a backend failure inside a step into EngineError."""
    try:
        yield from steps
    except EngineError:
        raise
    except Exception as exc:  # backend libraries raise their own untyped errors
        raise EngineError(f"{engine}: generation failed: {exc}") from exc
    finally:
        steps.close()
