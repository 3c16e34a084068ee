"""Shared decoding pieces for engines that run their own token loop.

`Sampler` picks the next token from logits; `IncrementalDetokenizer` / `WindowDetokenizer`
turn token ids into text without re-decoding the whole output; `StopMatcher` holds back
text that may start a stop string and cuts at the first stop string; `stream_tokens` ties
them to an engine's step iterator and yields the Engine protocol's chunks. Every per-token
operation costs O(new text + longest stop string), never O(text so far).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.engines.base import (
    Completion,
    EngineStats,
    FinishReason,
    SamplingParams,
    TokenChunk,
)
from agent.errors import ContextOverflow

REPEAT_PENALTY_WINDOW = 64  # recent tokens the repeat penalty looks at (llama.cpp's default)


class Sampler:
    """Picks tokens from logits: greedy at temperature 0, else top-k, top-p and temperature."""

    def __init__(self, params: SamplingParams, window: int = REPEAT_PENALTY_WINDOW) -> None:
        self._params = params
        self._rng = np.random.default_rng(params.seed)
        self._recent: deque[int] = deque(maxlen=window)

    def remember(self, tokens: Iterable[int]) -> None:
        """Add tokens (the prompt, or one just generated) to the repeat-penalty window."""
        self._recent.extend(tokens)

    def sample(self, logits: npt.NDArray[np.floating]) -> int:
        """The next token for one row of logits; the token is remembered for the penalty."""
        token = self._pick(np.asarray(logits, dtype=np.float64).reshape(-1))
        self._recent.append(token)
        return token

    def _pick(self, logits: npt.NDArray[np.float64]) -> int:
        p = self._params
        if p.repeat_penalty != 1.0 and self._recent:
            logits = logits.copy()
            ids = np.fromiter(set(self._recent), dtype=np.int64)
            ids = ids[ids < logits.shape[0]]
            seen = logits[ids]
            logits[ids] = np.where(seen > 0, seen / p.repeat_penalty, seen * p.repeat_penalty)
        if p.temperature <= 0.0:
            return int(np.argmax(logits))
        if 0 < p.top_k < logits.shape[0]:
            ids = np.argpartition(-logits, p.top_k - 1)[: p.top_k]
        else:
            ids = np.arange(logits.shape[0])
        order = np.argsort(-logits[ids], kind="stable")
        ids = ids[order]
        scaled = logits[ids] / p.temperature
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if 0.0 < p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
        index = int(np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum()))
        return int(ids[min(index, ids.shape[0] - 1)])


class Detokenizer(Protocol):
    """Turns one token at a time into the text it completes."""

    def push(self, token_id: int) -> str:
        """Text that became complete with this token (may be empty)."""
        ...

    def flush(self) -> str:
        """Whatever is still pending at the end of generation."""
        ...


class IncrementalDetokenizer:
    """Detokenizes through a token -> bytes table and an incremental UTF-8 decoder."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token; an unfinished UTF-8 sequence is held back."""
        return self._utf8.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        """Pending bytes of an unfinished character, as U+FFFD."""
        return self._utf8.decode(b"", final=True)


class WindowDetokenizer:
    """Detokenizes through a `decode(ids) -> str` over a short sliding window of tokens.

    For tokenizers that only decode whole sequences: decoding the last few tokens with one
    token of context keeps leading-space rules right and costs O(window) per token.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # end of the text already emitted

    def push(self, token_id: int) -> str:
        """Text completed by this token; held back while it ends in a partial character."""
        self._ids.append(token_id)
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        # drop ids before the window so the list does not grow with the output
        self._ids = self._ids[self._read :]
        self._prefix, self._read = 0, len(self._ids)
        return text[len(done) :]

    def flush(self) -> str:
        """Whatever is still held back."""
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._ids, self._prefix, self._read = [], 0, 0
        return text[len(done) :]


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back a possible stop prefix."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Text safe to emit now; sets `stopped` when a stop string completes."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text  # held never contains a full stop, so search only buf
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return buf[:cut]
        for size in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-size:]
            if any(s.startswith(tail) for s in self._stops):
                self._held = tail
                return buf[:-size]
        self._held = ""
        return buf

    def flush(self) -> str:
        """The held-back text, released because generation ended without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def check_context(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """Raise ContextOverflow when the prompt plus max_tokens exceed the context."""
    if prompt_tokens + max_tokens > context_length:
        raise ContextOverflow(prompt_tokens, max_tokens, context_length)


def stream_tokens(
    steps: Iterator[int],
    *,
    detokenizer: Detokenizer,
    is_end: Callable[[int], bool],
    params: SamplingParams,
    prompt_tokens: int,
    cancel: threading.Event | None = None,
    stats: EngineStats | None = None,
) -> Iterator[TokenChunk | Completion]:
    """Drive an engine's step iterator (one token id per step) into chunks and a Completion.

    The first step includes the prompt's evaluation, so its time is reported as prompt_eval_ns.
    Text still pending at the end rides on the last chunk (or on the end-of-sequence token's
    chunk). The step iterator is closed on every exit so engines can release per-call state.
    The Completion's token counts are added to `stats`, the engine's counters, when given.
    """
    stops = StopMatcher(params.stop)
    produced = 0
    prompt_ns = eval_ns = 0
    reason: FinishReason = "length"

    def tail() -> str:
        return stops.push(detokenizer.flush()) + stops.flush()

    try:
        while produced < params.max_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            started = time.perf_counter_ns()
            token = next(steps, None)
            elapsed = time.perf_counter_ns() - started
            if produced == 0:
                prompt_ns = elapsed
            else:
                eval_ns += elapsed
            if token is None or is_end(token):
                reason = "stop"
                rest = tail()
                if rest:
                    yield TokenChunk(text=rest, token_id=-1 if token is None else token)
                break
            produced += 1
            text = stops.push(detokenizer.push(token))
            if stops.stopped:
                reason = "stop"
            elif produced == params.max_tokens:
                text += tail()
            yield TokenChunk(text=text, token_id=token)
            if stops.stopped:
                break
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()
    if stats is not None:
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += produced
    yield Completion(
        finish_reason=reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=produced,
        prompt_eval_ns=prompt_ns,
        eval_ns=eval_ns,
    )
