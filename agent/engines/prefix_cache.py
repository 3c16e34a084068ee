"""Sequence ids of a batching backend and the KV prefixes that finished sequences leave behind.

Each sequence id has its own KV stream (llama.cpp's per-sequence KV, as `llama-server -np N`
runs): a sequence attends over its own cells only, laid out as if it ran alone, so its greedy
output is the same alone or in any batch. A finished sequence keeps its KV in its stream as a
cached prefix until the stream is needed again. A new sequence starts from the longest common
token prefix among cached and running sequences: those positions are reused, not computed again
(a shared system prompt, the earlier turns of a conversation).

llama.cpp evaluates a step in one pass only over sequence ids that follow each other (it splits
the batch at every gap), so a new sequence always takes the lowest id no running sequence holds.
The prefix it reuses is copied there (a copy between streams copies the stream's buffers, a few
milliseconds, then cuts it) unless it already lies there; a cached prefix that lay there moves
to a free stream first, or, with none free, the least recently used cached prefix gives way.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

MIN_REUSE_TOKENS = 4  # shorter matches (BOS, a role marker) are not worth a copy


class PrefixStore(Protocol):
    """The KV operations the cache needs from a backend."""

    n_seq: int

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make `dst`'s KV the first `length` positions of `src`'s (whatever `dst` held)."""
        ...

    def forget(self, seq: int, keep: int = 0) -> None:
        """Drop the KV of `seq` from position `keep` on."""
        ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable_prefix(
    prompt: Sequence[int], candidates: Iterable[tuple[int, Sequence[int]]]
) -> tuple[int | None, int]:
    """The candidate sharing the longest prefix with `prompt`, and how many tokens to reuse.

    The prompt's last token is always evaluated (its logits give the first new token), and a
    match shorter than MIN_REUSE_TOKENS is not worth a copy: (None, 0).
    """
    best: int | None = None
    length = 0
    for seq, tokens in candidates:
        n = common_prefix(tokens, prompt)
        if n > length:
            best, length = seq, n
    length = min(length, len(prompt) - 1)
    return (best, length) if length >= MIN_REUSE_TOKENS else (None, 0)


class PrefixCache:
    """Which stream a new sequence takes, cached prefixes in LRU order, the prefix lookup."""

    def __init__(self, store: PrefixStore, *, enabled: bool = True, cells: int = 0) -> None:
        self._store = store
        self.enabled = enabled
        self.cells = cells  # KV cells of the backend, for usage(); 0: unknown
        self._entries: collections.OrderedDict[int, list[int]] = collections.OrderedDict()
        self.hit_tokens = 0
        self.queries = 0

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(
        self, prompt: Sequence[int], running: Mapping[int, Sequence[int]], reuse: bool = True
    ) -> tuple[int, int]:
        """A sequence id for `prompt` and how many of its tokens already sit in its KV (none
        when `reuse` is off)."""
        self.queries += 1
        seq = next((s for s in range(self._store.n_seq) if s not in running), None)
        if seq is None:
            raise EngineError("no free sequence slot in the batching engine")
        best, length = (None, 0)
        if self.enabled and reuse:
            best, length = reusable_prefix(prompt, (*self._entries.items(), *running.items()))
        cached = self._entries.get(seq)
        if cached is not None and (best != seq or length < len(cached)):
            self._move_away(seq, running, keep=best)  # what the new sequence would overwrite
        self._entries.pop(seq, None)
        if best == seq:
            self._store.forget(seq, keep=length)
        elif best is not None:
            self._store.copy_prefix(best, seq, length)
            if best in self._entries:
                self._entries.move_to_end(best)
        else:
            self._store.forget(seq)
        self.hit_tokens += length
        return seq, length

    def keep(self, seq: int, tokens: Sequence[int]) -> bool:
        """Keep a finished sequence's KV as a cached prefix; False: the caller frees it."""
        if not self.enabled or not tokens:
            return False
        for other, cached in list(self._entries.items()):
            if len(cached) <= len(tokens) and common_prefix(cached, tokens) == len(cached):
                self._drop(other)  # the new entry holds all of it
        self._entries[seq] = list(tokens)
        return True

    def evict_oldest(self) -> bool:
        """Drop the least recently used prefix; False when none is cached."""
        if not self._entries:
            return False
        self._drop(next(iter(self._entries)))
        return True

    def usage(self, running: Mapping[int, Sequence[int]]) -> float:
        """Share of KV cells in use by running sequences and cached prefixes, 0..1."""
        if self.cells <= 0:
            return 0.0
        held = sum(len(t) for t in running.values()) + sum(len(t) for t in self._entries.values())
        return min(1.0, held / self.cells)

    def _move_away(
        self, seq: int, running: Mapping[int, Sequence[int]], *, keep: int | None
    ) -> None:
        """Save `seq`'s cached prefix before a new sequence cuts or overwrites it: copied to a
        free stream, or over the least recently used cached prefix (never `keep`, the one the
        new sequence copies from); when `seq`'s own is the least recently used, it just goes.
        `seq`'s stream itself is left as it is, for the caller to cut or overwrite.
        """
        busy = {*running, *self._entries, seq}
        free = [s for s in range(self._store.n_seq) if s not in busy]
        if free:
            target = free[-1]  # high ids: the low ones are where running sequences go
        else:
            target = next((s for s in self._entries if s not in (seq, keep)), seq)
            if target == seq or self._older(seq, target):
                del self._entries[seq]
                return
            self._drop(target)
        self._store.copy_prefix(seq, target, len(self._entries[seq]))
        self._entries = collections.OrderedDict(
            (target if s == seq else s, tokens) for s, tokens in self._entries.items()
        )

    def _older(self, a: int, b: int) -> bool:
        """Whether cached prefix `a` was used less recently than `b`."""
        order = list(self._entries)
        return order.index(a) < order.index(b)

    def _drop(self, seq: int) -> None:
        del self._entries[seq]
        self._store.forget(seq)
        _LOGGER.debug("prefix cache dropped sequence %d", seq)
