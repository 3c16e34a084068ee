"""llama.cpp engine for GGUF files: slots and continuous batching over llama.cpp's low-level API.

One model, one context with `parallel` sequences (`LlamaBatchBackend`), driven by the shared
`BatchScheduler` in one worker thread: every step is one `llama_decode` over the decode
tokens of all running sequences plus prompt chunks of new ones. Detokenizing and stop strings
are ours and incremental (a token -> bytes table); the high-level `create_completion(stream=
True)` re-decodes the whole output each token. `Llama` itself is kept only for tokenizing and
metadata, with a tiny context of its own.
"""

from __future__ import annotations

import logging
import os
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
    find_model_file,
)
from agent.engines.batching import BatchScheduler
from agent.engines.decoding import check_context
from agent.engines.llamacpp_batch import LlamaBatchBackend
from agent.engines.llamacpp_embed import LlamaEmbedder
from agent.engines.offload import (
    GGUFHeaderError,
    ModelShape,
    OffloadPlan,
    model_shape,
    plan_offload,
    read_metadata,
)
from agent.engines.registry import import_runtime
from agent.engines.scheduled import generate_scheduled
from agent.engines.scheduling import SchedulerStats
from agent.engines.sizing import SlotPlan, plan_slots, probed_available_memory
from agent.errors import AgentError, EngineError, ModelLoadError
from models.llamacpp_amx import avoid_faulting_amx

_LOGGER = logging.getLogger(__name__)


def find_gguf(model_path: Path) -> Path:
    """The .gguf file: the path itself or the only .gguf in the folder."""
    return find_model_file(model_path, ".gguf")


# libgomp's default lets a llama.cpp thread spin between decodes; on a small device that
# core is then missing for the Python work of a step (sampling, streaming) and, with several
# streams, for the event loop: measured here at 2 threads on 2 cores, 8 streams went from
# 9 to 100 tok/s with PASSIVE. Read once, when libgomp loads: set before importing llama_cpp.
OMP_WAIT_POLICY = "PASSIVE"


def _import_llama_cpp() -> Any:
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    return import_runtime("llamacpp")


# Context of the Llama object kept for tokenizing and metadata; the slots have their own.
_TOKENIZER_CONTEXT = 64


def _shape(gguf: Path) -> ModelShape | None:
    try:
        return model_shape(gguf)
    except (GGUFHeaderError, OSError) as exc:
        _LOGGER.warning("cannot read the shape of %s (%s): not offloading, 1 slot", gguf, exc)
        return None


def _offload_plan(
    shape: ModelShape | None, options: LoadOptions, supports_gpu_offload: bool
) -> OffloadPlan:
    """Layers to offload for this file: as set in the options, else what fits the GPU budget."""
    if shape is None:
        return OffloadPlan(0, 0, "GGUF header unreadable")
    if options.gpu_layers:  # set explicitly (configuration, tests): honoured when possible
        layers = min(options.gpu_layers, shape.n_layers) if supports_gpu_offload else 0
        return OffloadPlan(layers, shape.n_layers, "gpu_layers set in the load options")
    return plan_offload(
        shape,
        context_length=options.context_length * max(options.parallel, 1),
        supports_gpu_offload=supports_gpu_offload,
        gpu_memory_bytes=options.gpu_memory_bytes,
    )


def _slot_plan(shape: ModelShape | None, options: LoadOptions, plan: OffloadPlan) -> SlotPlan:
    """Slots from --parallel or from memory: the GPU budget when offloaded, else free RAM."""
    if shape is None:
        parallel = max(options.parallel, 1)
        return SlotPlan(parallel, options.context_length, 0, f"{parallel} slots (shape unknown)")
    if plan.gpu_layers:
        available = options.gpu_memory_bytes
    else:
        available = options.memory_bytes
        if available is None and options.parallel <= 0:
            available = probed_available_memory()
    if available is not None and available < 0:
        available = None
    return plan_slots(
        shape,
        slot_context=options.context_length,
        available_bytes=available,
        requested=options.parallel,
    )


class LlamaCppEngine:
    """GGUF models on llama.cpp (CPU, or CUDA/Metal/Vulkan when the build has it)."""

    name = "llamacpp"
    constrained_decoding = True  # OutputConstraint through llama.cpp's grammar sampler
    exposes_logprobs = True  # each sequence's own row of logits, when it asks
    exposes_prompt_logprobs = True  # a row for each prompt token, when it asks

    def __init__(self) -> None:
        self._llm: Any = None
        self._lib: Any = None
        self._backend: LlamaBatchBackend | None = None
        self.scheduler: BatchScheduler | None = None
        self.slots: SlotPlan | None = None
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self._bos_text: str | None = None
        self._embedder: LlamaEmbedder | None = None
        self._stats = EngineStats()

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Open the GGUF with `parallel` slots of the requested context, on the GPU if it fits."""
        lib = _import_llama_cpp()
        self.unload()
        gguf = find_gguf(model_path) if model_path.exists() else model_path
        if not gguf.is_file():
            raise ModelLoadError(f"model file {gguf} does not exist")
        avoid_faulting_amx(lib, gguf)
        shape = _shape(gguf)
        plan = _offload_plan(shape, options, bool(lib.llama_supports_gpu_offload()))
        slots = _slot_plan(shape, options, plan)
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
        self._pieces, self._ends = {}, {}
        self._bos_text = self._token_text(llm.token_bos())
        try:
            self._embedder = embedder = self._open_embedder(gguf, options, llm)
            backend = LlamaBatchBackend(
                lib,
                llm._model,
                n_slots=slots.parallel,
                slot_context=slots.slot_context,
                threads=options.threads,
                piece=self._piece,
                is_end=self._is_end,
            )
        except AgentError:
            self.unload()
            raise
        self._backend, self.slots = backend, slots
        self._stats = EngineStats(
            load_seconds=time.perf_counter() - started,
            device=plan.device,
            extra={
                "gpu_layers": str(plan.gpu_layers),
                "layers": str(plan.total_layers),
                "offload": plan.reason,
                "threads": str(llm.n_threads),
                "parallel": str(slots.parallel),
                "slot_context": str(slots.slot_context),
                "slots": slots.reason,
                "prefix_cache": "on" if backend.shares_prefixes else "off (SWA/recurrent model)",
                "embeddings": embedder.path.name,
            },
        )
        self.scheduler = BatchScheduler(
            backend, n_slots=slots.parallel, stats=self._stats, prefix_cache=backend.shares_prefixes
        )
        _LOGGER.info(
            "llama.cpp loaded %s on %s: %s; %s", gguf, plan.device, plan.reason, slots.reason
        )

    @staticmethod
    def _open_embedder(gguf: Path, options: LoadOptions, llm: Any) -> LlamaEmbedder:
        """Embeddings from the manifest's dedicated embedding GGUF, else by pooling this model."""
        dedicated = options.embedding_model
        if dedicated is None:
            return LlamaEmbedder(gguf, options, dict(getattr(llm, "metadata", None) or {}))
        if not dedicated.is_file():
            raise ModelLoadError(f"embedding model file {dedicated} does not exist")
        try:
            metadata = {k: str(v) for k, v in read_metadata(dedicated).items()}
        except (GGUFHeaderError, OSError) as exc:
            raise ModelLoadError(f"{dedicated} is not a readable GGUF: {exc}") from exc
        _LOGGER.info("embeddings for %s come from %s", gguf.name, dedicated)
        return LlamaEmbedder(dedicated, options, metadata)

    @staticmethod
    def _open(lib: Any, gguf: Path, options: LoadOptions, n_gpu_layers: int) -> Any:
        try:
            return lib.Llama(
                model_path=str(gguf),
                n_ctx=_TOKENIZER_CONTEXT,
                n_batch=_TOKENIZER_CONTEXT,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_gpu_layers=n_gpu_layers,
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

    def fim_tokens(self) -> tuple[str, str, str] | None:
        """The model's fill-in-the-middle prefix, suffix and middle token texts, if it has them."""
        llm = self._loaded()
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)
        names = ("llama_vocab_fim_pre", "llama_vocab_fim_suf", "llama_vocab_fim_mid")
        if vocab is None or not all(hasattr(self._lib, n) for n in names):
            return None
        texts = [self._token_text(int(getattr(self._lib, n)(vocab))) for n in names]
        if not all(texts):
            return None
        prefix, suffix, middle = texts
        assert prefix and suffix and middle
        return prefix, suffix, middle

    def count_tokens(self, text: str) -> int:
        """Tokens the prompt takes, BOS included when the model adds one."""
        return len(self._tokenize(text))

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Stream tokens for the prompt through the batch scheduler, then one Completion."""
        prompt_ids = self.tokenize(prompt)
        check_context(len(prompt_ids), params.max_tokens, self.context_length)
        yield from generate_scheduled(self._scheduler(), prompt_ids, params, cancel)

    def tokenize(self, text: str) -> list[int]:
        """The prompt's token ids, BOS included when the model adds one (any thread)."""
        return self._tokenize(text)

    def batch_stats(self) -> SchedulerStats | None:
        """The scheduler's gauges and counters (None when nothing is loaded)."""
        return self.scheduler.stats() if self.scheduler is not None else None

    def unload(self) -> None:
        """Stop the scheduler, then free the context and the model."""
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
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
        """Tokens of context one slot holds (0 when nothing is loaded)."""
        return self.slots.slot_context if self._llm is not None and self.slots else 0

    def _scheduler(self) -> BatchScheduler:
        if self.scheduler is None:
            raise EngineError("llamacpp: no model loaded; call load() first")
        return self.scheduler

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
