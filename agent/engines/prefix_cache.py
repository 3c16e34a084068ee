"""Sequence ids of a batching backend and the KV prefixes that finished sequences leave behind.

A finished sequence keeps its KV under its id as a cached prefix (LRU, at most `capacity`).
A new sequence starts from the longest common token prefix among cached and running
sequences: the backend copies those positions (in llama.cpp's unified KV cache a copy only
tags the same cells with one more sequence id), so a shared system prompt or the earlier
turns of a conversation are not computed again.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

MIN_REUSE_TOKENS = 4  # shorter matches (BOS, a role marker) are not worth a copy


class PrefixStore(Protocol):
    """The KV operations the cache needs from a backend."""

    n_seq: int

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make the first `length` KV positions of `src` those of `dst` too."""
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


def distinct_cells(sequences: Sequence[list[int]]) -> int:
    """Positions in a prefix tree of the sequences: KV cells when shared prefixes share cells."""
    ordered = sorted(sequences)
    total = 0
    previous: Sequence[int] = ()
    for tokens in ordered:
        total += len(tokens) - common_prefix(previous, tokens)
        previous = tokens
    return total


class PrefixCache:
    """Free sequence ids, cached prefixes in LRU order, and the longest-prefix lookup."""

    def __init__(
        self, store: PrefixStore, *, capacity: int, enabled: bool = True, cells: int = 0
    ) -> None:
        self._store = store
        self.capacity = max(0, capacity) if enabled else 0
        self.cells = cells  # KV cells of the backend, for usage(); 0: unknown
        self._free: list[int] = list(range(store.n_seq))
        self._entries: collections.OrderedDict[int, list[int]] = collections.OrderedDict()
        self.hit_tokens = 0
        self.queries = 0

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(
        self, prompt: Sequence[int], running: Mapping[int, Sequence[int]]
    ) -> tuple[int, int]:
        """A sequence id for `prompt` and how many of its tokens already sit in its KV."""
        self.queries += 1
        best, length = self._longest(prompt, running)
        length = min(length, len(prompt) - 1)  # the last token is evaluated for its logits
        if length < MIN_REUSE_TOKENS:
            best, length = None, 0
        if best is not None and best in self._entries and not self._free:
            # no id to spare: continue the cached sequence itself, cutting what differs
            del self._entries[best]
            self._store.forget(best, keep=length)
            self.hit_tokens += length
            return best, length
        seq = self._take_free(keep=best)
        if best is not None:
            self._store.forget(seq)
            self._store.copy_prefix(best, seq, length)
            if best in self._entries:
                self._entries.move_to_end(best)
            self.hit_tokens += length
        return seq, length

    def keep(self, seq: int, tokens: Sequence[int]) -> bool:
        """Keep a finished sequence's KV as a cached prefix; False: the caller frees it."""
        if self.capacity == 0 or not tokens:
            return False
        for other, cached in list(self._entries.items()):
            if len(cached) <= len(tokens) and common_prefix(cached, tokens) == len(cached):
                self._drop(other)  # the new entry holds all of it
        self._entries[seq] = list(tokens)
        while len(self._entries) > self.capacity:
            self.evict_oldest()
        return True

    def release(self, seq: int) -> None:
        """Return a sequence id whose KV the caller has already dropped."""
        self._free.append(seq)

    def evict_oldest(self) -> bool:
        """Drop the least recently used prefix; False when none is cached."""
        if not self._entries:
            return False
        seq = next(iter(self._entries))
        self._drop(seq)
        return True

    def usage(self, running: Mapping[int, Sequence[int]]) -> float:
        """Estimated share of KV cells in use (shared prefixes counted once), 0..1."""
        if self.cells <= 0:
            return 0.0
        held = [list(t) for t in running.values()] + [list(t) for t in self._entries.values()]
        return min(1.0, distinct_cells(held) / self.cells)

    def _longest(
        self, prompt: Sequence[int], running: Mapping[int, Sequence[int]]
    ) -> tuple[int | None, int]:
        best: int | None = None
        length = 0
        for seq, tokens in (*self._entries.items(), *running.items()):
            n = common_prefix(tokens, prompt)
            if n > length:
                best, length = seq, n
        return best, length

    def _take_free(self, *, keep: int | None) -> int:
        if not self._free:
            victim = next((s for s in self._entries if s != keep), None)
            if victim is None:
                raise EngineError("no free sequence slot in the batching engine")
            self._drop(victim)
        return self._free.pop(0)

    def _drop(self, seq: int) -> None:
        del self._entries[seq]
        try:
            self._store.forget(seq)
        finally:
            self._free.append(seq)
        _LOGGER.debug("prefix cache dropped sequence %d", seq)
