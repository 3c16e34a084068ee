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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.engines.base import (
    Completion,
    EngineStats,
    LoadOptions,
    ModelChatInfo,
    SamplingParams,
    TokenChunk,
)
from agent.engines.decoding import (
    REPEAT_PENALTY_WINDOW,
    IncrementalDetokenizer,
    check_context,
    stream_tokens,
)
from agent.engines.llamacpp_embed import LlamaEmbedder
from agent.engines.llamacpp_grammar import grammar_for
from agent.engines.offload import GGUFHeaderError, OffloadPlan, model_shape, plan_offload
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


def _offload_plan(gguf: Path, options: LoadOptions, supports_gpu_offload: bool) -> OffloadPlan:
    """Layers to offload for this file: as set in the options, else what fits the GPU budget."""
    try:
        shape = model_shape(gguf)
    except (GGUFHeaderError, OSError) as exc:
        _LOGGER.warning("cannot read the layer count of %s (%s): not offloading", gguf, exc)
        return OffloadPlan(0, 0, f"GGUF header unreadable: {exc}")
    if options.gpu_layers:  # set explicitly (configuration, tests): honoured when possible
        layers = min(options.gpu_layers, shape.n_layers) if supports_gpu_offload else 0
        return OffloadPlan(layers, shape.n_layers, "gpu_layers set in the load options")
    return plan_offload(
        shape,
        context_length=options.context_length,
        supports_gpu_offload=supports_gpu_offload,
        gpu_memory_bytes=options.gpu_memory_bytes,
    )


class LlamaCppEngine:
    """GGUF models on llama.cpp (CPU, or CUDA/Metal/Vulkan when the build has it)."""

    name = "llamacpp"
    constrained_decoding = True  # OutputConstraint through llama.cpp's grammar sampler

    def __init__(self) -> None:
        self._llm: Any = None
        self._lib: Any = None
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self._bos_text: str | None = None
        self._embedder: LlamaEmbedder | None = None
        self._stats = EngineStats()
        self._lock = threading.Lock()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Open the GGUF with the requested context and threads, on the GPU as far as it fits."""
        lib = _import_llama_cpp()
        self.unload()
        gguf = find_gguf(model_path) if model_path.exists() else model_path
        if not gguf.is_file():
            raise ModelLoadError(f"model file {gguf} does not exist")
        plan = _offload_plan(gguf, options, bool(lib.llama_supports_gpu_offload()))
        started = time.perf_counter()
        try:
            llm = self._open(lib, gguf, options, plan.n_gpu_layers)
        except ModelLoadError as exc:
            if plan.gpu_layers == 0:
                raise
            _LOGGER.warning("llama.cpp could not load %s on the GPU (%s); using the CPU", gguf, exc)
            plan = OffloadPlan(0, plan.total_layers, f"GPU load failed: {exc}")
            llm = self._open(lib, gguf, options, 0)
        self._llm, self._lib = llm, lib
        self._embedder = LlamaEmbedder(gguf, options, dict(getattr(llm, "metadata", None) or {}))
        self._pieces, self._ends = {}, {}
        self._bos_text = self._token_text(llm.token_bos())
        self._stats = EngineStats(
            load_seconds=time.perf_counter() - started,
            device=plan.device,
            extra={
                "gpu_layers": str(plan.gpu_layers),
                "layers": str(plan.total_layers),
                "offload": plan.reason,
                "threads": str(llm.n_threads),
            },
        )
        _LOGGER.info("llama.cpp loaded %s on %s: %s", gguf, plan.device, plan.reason)

    @staticmethod
    def _open(lib: Any, gguf: Path, options: LoadOptions, n_gpu_layers: int) -> Any:
        try:
            return lib.Llama(
                model_path=str(gguf),
                n_ctx=options.context_length,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_gpu_layers=n_gpu_layers,
                last_n_tokens_size=REPEAT_PENALTY_WINDOW,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp cannot load {gguf}: {exc}") from exc

    def chat_info(self, candidates: Sequence[str]) -> ModelChatInfo:
        """Template, BOS/EOS and end-of-turn texts from the GGUF; which candidates are special."""
        llm = self._loaded()
        meta: dict[str, str] = dict(getattr(llm, "metadata", None) or {})
        ids = {c: t for c in candidates if (t := self._special_id(c)) is not None}
        ends = [c for c, t in ids.items() if self._is_end(t)]
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
            text = self._token_text(meta.get(key))
            if text and text not in ends:
                ends.append(text)
        return ModelChatInfo(
            template=meta.get("tokenizer.chat_template") or None,
            bos_token=self._token_text(meta.get("tokenizer.ggml.bos_token_id")),
            eos_token=self._token_text(meta.get("tokenizer.ggml.eos_token_id")),
            end_of_turn=tuple(ends),
            specials=frozenset(ids),
        )

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
                    grammar=grammar_for(params.constraint),
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
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled (or the model's own pooling), normalised embeddings of the texts."""
        if self._embedder is None:
            raise EngineError("llamacpp: no model loaded; call load() first")
        return self._embedder.embed(texts)

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
        llm = self._loaded()
        # A chat template that writes the BOS text itself must not get a second BOS.
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        ids: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return ids

    def _special_id(self, text: str) -> int | None:
        """The token id when `text` is one special token (not also spelled by plain pieces)."""
        llm = self._loaded()
        raw = text.encode("utf-8")
        as_special = llm.tokenize(raw, add_bos=False, special=True)
        if len(as_special) != 1 or len(llm.tokenize(raw, add_bos=False, special=False)) == 1:
            return None
        return int(as_special[0])

    def _token_text(self, token: object) -> str | None:
        try:
            token_id = int(str(token))
        except ValueError:
            return None
        llm = self._loaded()
        if not 0 <= token_id < llm.n_vocab():
            return None
        text = bytes(llm.detokenize([token_id], special=True)).decode("utf-8", errors="replace")
        return text or None

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
