"""Constrained decoding for the engines that run our own token loop (ONNX Runtime, TensorRT).

llguidance compiles an OutputConstraint's JSON schema into a grammar over the model's own
tokenizer (its `tokenizer.json`). At every step the matcher's token bitmask sets the logits of
the tokens the grammar does not allow to -inf before sampling, and the sampled token is fed
back to the matcher; once the JSON is complete only an end-of-sequence token is allowed. The
tokenizer is read at the first constrained request, so requests without a constraint (and
model loads) never pay for it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.engines.base import OutputConstraint
from agent.errors import EngineError, EngineUnavailable

if TYPE_CHECKING:
    from llguidance import LLMatcher
    from llguidance._lib import JsonCompileOptions

# Compact JSON with the separators models usually write: a sampled run of spaces or newlines
# cannot eat the token budget. oneOf is read as anyOf, as llama.cpp's grammar does.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "coerce_one_of": True,
}
ANY_OBJECT = {"type": "object"}
MATCHER_CACHE_SIZE = 16  # compiled grammars kept per model, most recently used first


class TokenPicker(Protocol):
    """What the token loop samples with: agent.engines.decoding.Sampler, or one under a mask."""

    def remember(self, tokens: Iterable[int]) -> None:
        """Add tokens to the repeat-penalty window."""
        ...

    def sample(self, logits: npt.NDArray[np.floating]) -> int:
        """The next token for one row of logits."""
        ...


@functools.cache
def llguidance_installed() -> bool:
    """Whether llguidance can be imported (the onnx and tensorrt extras install it)."""
    return importlib.util.find_spec("llguidance") is not None


@functools.lru_cache(maxsize=64)
def constraint_grammar(constraint: OutputConstraint) -> str:
    """llguidance's grammar for the constraint: its JSON schema, or any JSON object."""
    from llguidance import LLMatcher

    schema: Any = ANY_OBJECT if constraint.schema is None else json.loads(constraint.schema)
    try:
        return str(LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS))
    except ValueError as exc:
        raise EngineError(f"llguidance cannot read the JSON schema: {exc}") from exc


class GrammarCompiler:
    """A model's tokenizer as llguidance sees it, and the grammars compiled against it."""

    def __init__(self, tokenizer_json: Path, eos_ids: Iterable[int]) -> None:
        try:
            import llguidance
        except ImportError as exc:
            raise EngineUnavailable(
                "constrained decoding on this engine needs llguidance: pip install llguidance"
            ) from exc
        eos = sorted(eos_ids)
        try:
            self._tokenizer = llguidance.LLTokenizer(
                tokenizer_json.read_text(encoding="utf-8"), eos_token=eos or None
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise EngineError(
                f"llguidance cannot read the tokenizer {tokenizer_json}: {exc}"
            ) from exc
        self.vocab_size = int(self._tokenizer.vocab_size)
        self._compiled: OrderedDict[OutputConstraint, LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def sampler(self, picker: TokenPicker, constraint: OutputConstraint) -> MaskedSampler:
        """`picker` restricted to the tokens the constraint's grammar allows, step by step."""
        return MaskedSampler(picker, self._matcher(constraint), self.vocab_size)

    def _matcher(self, constraint: OutputConstraint) -> LLMatcher:
        """A fresh matcher: a copy of the compiled one (compiling takes milliseconds or more)."""
        from llguidance import LLMatcher

        with self._lock:
            template = self._compiled.get(constraint)
            if template is not None:
                self._compiled.move_to_end(constraint)
                return template.deep_copy()
        grammar = constraint_grammar(constraint)
        try:
            template = LLMatcher(self._tokenizer, grammar, log_level=0)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llguidance cannot compile the JSON schema: {exc}") from exc
        if template.is_error():
            raise EngineError(f"llguidance cannot compile the JSON schema: {template.get_error()}")
        with self._lock:
            self._compiled[constraint] = template
            while len(self._compiled) > MATCHER_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return template.deep_copy()


class MaskedSampler:
    """Samples only tokens the grammar allows next, and advances the grammar with each one."""

    def __init__(self, picker: TokenPicker, matcher: LLMatcher, vocab_size: int) -> None:
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        self._fill = fill_next_token_bitmask
        self._picker = picker
        self._matcher = matcher
        self._vocab = vocab_size
        self._bitmask = allocate_token_bitmask(1, vocab_size)

    def remember(self, tokens: Iterable[int]) -> None:
        """The prompt (or a token) for the repeat-penalty window; the grammar starts after it."""
        self._picker.remember(tokens)

    def sample(self, logits: npt.NDArray[np.floating]) -> int:
        """The next token among those the grammar allows."""
        token = self._picker.sample(self.masked(logits))
        if not self._matcher.consume_token(token):
            raise EngineError(f"constrained decoding failed: {self._matcher.get_error()}")
        return token

    def masked(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """A copy of the logits with every token the grammar forbids now at -inf."""
        matcher, bitmask = self._matcher, self._bitmask
        self._fill(matcher, bitmask)
        if matcher.is_error():
            raise EngineError(f"constrained decoding failed: {matcher.get_error()}")
        row: npt.NDArray[np.float64] = np.asarray(logits, dtype=np.float64).reshape(-1).copy()
        allowed = np.unpackbits(bitmask[0].view(np.uint8), bitorder="little").astype(bool)
        shared = min(row.shape[0], self._vocab)
        row[:shared][~allowed[:shared]] = -np.inf
        row[shared:] = -np.inf  # logits padded past the tokenizer's vocabulary
        if not np.isfinite(row).any():
            raise EngineError(
                "constrained decoding failed: the grammar allows no token of this model"
            )
        return row
