"""Embeddings on llama.cpp: a second, embedding-only context over the same GGUF, opened lazily.

The generation context cannot return pooled embeddings, so the first embedding request opens
a small `Llama(embedding=True)` on the file (the weights are memory-mapped, so the OS shares
their pages). A model whose GGUF names no pooling (a chat model) is mean-pooled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.engines.base import LoadOptions
from agent.errors import ContextOverflow, EngineError, ModelLoadError

_LOGGER = logging.getLogger(__name__)
# Tokens of context per text: enough for retrieval chunks, small enough to stay light.
EMBEDDING_CONTEXT = 512


class LlamaEmbedder:
    """Pooled, L2-normalised embeddings of texts, from an embedding context opened on first use."""

    def __init__(self, gguf: Path, options: LoadOptions, metadata: Mapping[str, str]) -> None:
        self._gguf = self.path = gguf
        arch = metadata.get("general.architecture", "")
        # An embedding model says how it pools; a chat model does not, and is mean-pooled.
        self._declares_pooling = f"{arch}.pooling_type" in metadata
        self._threads = options.threads
        self._context = min(EMBEDDING_CONTEXT, options.context_length)
        self._llm: Any = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """One vector per text and the tokens they took; ContextOverflow for a text too long."""
        with self._lock:
            llm = self._llm = self._llm or self._open()
            for text in texts:
                tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
                if tokens > self._context:  # refused (400), never silently truncated
                    raise ContextOverflow(tokens, 0, self._context)
            try:
                vectors, count = llm.embed(list(texts), normalize=True, return_count=True)
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"llama.cpp embedding failed: {exc}") from exc
        return [list(map(float, v)) for v in vectors], int(count)

    def _open(self) -> Any:
        import llama_cpp

        pooling = (
            llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
            if self._declares_pooling
            else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        )
        try:
            llm = llama_cpp.Llama(
                model_path=str(self._gguf),
                embedding=True,
                n_ctx=self._context,
                n_batch=self._context,
                n_ubatch=self._context,
                n_threads=self._threads,
                n_threads_batch=self._threads,
                verbose=False,
                pooling_type=pooling,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp cannot open {self._gguf} for embeddings: {exc}"
            ) from exc
        _LOGGER.info("opened an embedding context on %s (pooling %s)", self._gguf, pooling)
        return llm

    def close(self) -> None:
        """Free the embedding context, if one was opened."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
            self._llm = None
