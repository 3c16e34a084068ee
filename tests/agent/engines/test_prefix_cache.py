"""Which KV stream a new sequence takes and what the cached prefixes in idle streams become."""

from __future__ import annotations

from agent.engines.prefix_cache import PrefixCache, reusable_prefix


class Streams:
    """KV streams as token lists; records copies."""

    def __init__(self, n_seq: int) -> None:
        self.n_seq = n_seq
        self.kv: dict[int, list[int]] = {s: [] for s in range(n_seq)}
        self.copies: list[tuple[int, int, int]] = []

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        self.copies.append((src, dst, length))
        self.kv[dst] = self.kv[src][:length]

    def forget(self, seq: int, keep: int = 0) -> None:
        self.kv[seq] = self.kv[seq][:keep]


def _finish(cache: PrefixCache, streams: Streams, seq: int, tokens: list[int]) -> None:
    streams.kv[seq] = list(tokens)
    assert cache.keep(seq, tokens)


def test_a_new_sequence_takes_the_lowest_stream_no_running_sequence_holds() -> None:
    cache = PrefixCache(Streams(4))
    assert cache.acquire([1, 2, 3], {0: [9], 2: [8]}) == (1, 0)
    assert cache.acquire([1, 2, 3], {0: [9], 1: [7], 2: [8]}) == (3, 0)


def test_a_prefix_cached_in_the_lowest_stream_is_reused_in_place() -> None:
    streams = Streams(4)
    cache = PrefixCache(streams)
    _finish(cache, streams, 0, [1, 2, 3, 4, 5, 6])
    assert cache.acquire([1, 2, 3, 4, 5, 6, 7, 8], {}) == (0, 6)
    assert streams.copies == [] and streams.kv[0] == [1, 2, 3, 4, 5, 6]
    assert len(cache) == 0  # it is running now, no longer a cached prefix


def test_the_matching_prefix_is_copied_into_the_new_sequences_stream_and_cut() -> None:
    streams = Streams(4)
    cache = PrefixCache(streams)
    streams.kv[0] = [5, 6, 7, 8, 9, 10]  # running: a shared system prompt, then its own turn
    seq, reused = cache.acquire([5, 6, 7, 8, 1, 1], {0: streams.kv[0]})
    assert (seq, reused) == (1, 4)
    assert streams.kv[1] == [5, 6, 7, 8] and streams.copies == [(0, 1, 4)]
    assert cache.hit_tokens == 4


def test_a_cached_prefix_in_the_way_moves_to_a_free_stream_and_still_hits() -> None:
    streams = Streams(4)
    cache = PrefixCache(streams)
    _finish(cache, streams, 0, [1, 1, 1, 1, 1, 1])
    seq, reused = cache.acquire([2, 2, 2, 2, 2], {})
    assert (seq, reused) == (0, 0) and streams.kv[0] == []
    assert streams.copies == [(0, 3, 6)] and streams.kv[3] == [1, 1, 1, 1, 1, 1]
    assert cache.acquire([1, 1, 1, 1, 1, 1, 3], {0: [2, 2, 2, 2, 2]}) == (1, 6)


def test_with_no_stream_free_the_least_recently_used_prefix_gives_way() -> None:
    streams = Streams(2)
    cache = PrefixCache(streams)
    _finish(cache, streams, 1, [1, 1, 1, 1, 1])  # older
    _finish(cache, streams, 0, [2, 2, 2, 2, 2])  # newer, in the way of a new sequence
    assert cache.acquire([3, 3, 3, 3, 3], {}) == (0, 0)
    assert streams.kv[1] == [2, 2, 2, 2, 2] and len(cache) == 1  # moved over the older one


def test_a_prefix_in_the_way_that_is_the_least_recently_used_simply_goes() -> None:
    streams = Streams(2)
    cache = PrefixCache(streams)
    _finish(cache, streams, 0, [2, 2, 2, 2, 2])  # older, in the way
    _finish(cache, streams, 1, [1, 1, 1, 1, 1])  # newer
    assert cache.acquire([3, 3, 3, 3, 3], {}) == (0, 0)
    assert streams.copies == [] and streams.kv[1] == [1, 1, 1, 1, 1] and len(cache) == 1


def test_a_finished_sequence_replaces_the_cached_prefixes_it_extends() -> None:
    streams = Streams(4)
    cache = PrefixCache(streams)
    _finish(cache, streams, 2, [1, 2, 3, 4])
    _finish(cache, streams, 0, [1, 2, 3, 4, 5, 6])
    assert len(cache) == 1 and streams.kv[2] == []


def test_short_matches_and_the_last_prompt_token_are_not_reused() -> None:
    assert reusable_prefix([1, 2, 3, 9], [(0, [1, 2, 3, 4])]) == (None, 0)
    assert reusable_prefix([1, 2, 3, 4, 5], [(0, [1, 2, 3, 4, 5])]) == (0, 4)


def test_a_disabled_cache_keeps_nothing_and_clears_the_stream() -> None:
    streams = Streams(2)
    streams.kv[0] = [1, 2, 3, 4, 5]
    cache = PrefixCache(streams, enabled=False)
    assert cache.acquire([1, 2, 3, 4, 5, 6], {}) == (0, 0) and streams.kv[0] == []
    assert not cache.keep(0, [1, 2, 3])


def test_a_longer_prefix_in_the_way_is_saved_before_a_shorter_match_cuts_it() -> None:
    streams = Streams(4)
    cache = PrefixCache(streams)
    conversation = [7, 7, 7, 7, 1, 2, 3, 4, 5, 6]  # a long first turn after a system prompt
    _finish(cache, streams, 0, conversation)
    other = [7, 7, 7, 7, 9, 9]  # another client: the same system prompt, then its own turn
    assert cache.acquire(other, {}) == (0, 4)
    assert streams.kv[0] == [7, 7, 7, 7]
    assert streams.kv[3] == conversation  # saved in a free stream
    assert cache.acquire([*conversation, 8, 8], {0: other}) == (1, 10)  # turn 2 still hits
