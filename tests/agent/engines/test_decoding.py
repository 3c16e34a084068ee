"""Sampler, detokenizers, stop matching and the shared streaming driver."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from agent.engines.base import Completion, SamplingParams, TokenChunk
from agent.engines.decoding import (
    IncrementalDetokenizer,
    Sampler,
    StopMatcher,
    WindowDetokenizer,
    check_context,
    stream_tokens,
)
from agent.errors import ContextOverflow

RNG = np.random.default_rng(1234)
LOGITS = [RNG.normal(size=50) for _ in range(20)]


def draw(params: SamplingParams) -> list[int]:
    sampler = Sampler(params)
    return [sampler.sample(row) for row in LOGITS]


def test_greedy_picks_argmax_without_penalty() -> None:
    tokens = draw(SamplingParams(temperature=0, repeat_penalty=1.0))
    assert tokens == [int(np.argmax(row)) for row in LOGITS]


def test_top_k_one_equals_greedy() -> None:
    greedy = draw(SamplingParams(temperature=0, repeat_penalty=1.3))
    assert draw(SamplingParams(temperature=0.9, top_k=1, repeat_penalty=1.3, seed=5)) == greedy


def test_same_seed_same_tokens_other_seed_differs() -> None:
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=7)
    assert draw(params) == draw(params)
    assert draw(params) != draw(SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=8))


def test_top_k_and_top_p_restrict_the_choice() -> None:
    row = np.array([5.0, 4.9, 4.8, -10.0, -10.0])
    sampler = Sampler(SamplingParams(temperature=5.0, top_k=2, repeat_penalty=1.0, seed=0))
    assert {sampler.sample(row) for _ in range(200)} == {0, 1}
    nucleus = Sampler(
        SamplingParams(temperature=1.0, top_k=0, top_p=0.5, repeat_penalty=1.0, seed=0)
    )
    assert {nucleus.sample(np.array([3.0, 0.0, 0.0])) for _ in range(100)} == {0}


def test_repeat_penalty_steers_greedy_away_from_recent_tokens() -> None:
    sampler = Sampler(SamplingParams(temperature=0, repeat_penalty=2.0))
    sampler.remember([0])
    assert sampler.sample(np.array([2.0, 1.5, 0.0])) == 1


PIECES = {
    1: "hé".encode()[:2],
    2: "é".encode()[1:] + b"!",
    3: "€".encode()[:1],
    4: "€".encode()[1:],
}


def test_incremental_detokenizer_holds_split_utf8() -> None:
    detok = IncrementalDetokenizer(PIECES.__getitem__)
    assert [detok.push(t) for t in (1, 2, 3, 4)] == ["h", "é!", "", "€"]
    detok.push(3)
    assert detok.flush() == "\ufffd"


def test_window_detokenizer_matches_full_decode() -> None:
    table = {i: bytes([b]) for i, b in enumerate("naïve €1 日本".encode())}

    def decode(ids: object) -> str:
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")  # type: ignore[attr-defined]

    detok = WindowDetokenizer(decode)
    text = "".join(detok.push(i) for i in table) + detok.flush()
    assert text == "naïve €1 日本"


@pytest.mark.parametrize(
    ("pieces", "stops", "emitted", "stopped"),
    [
        (["Hello", " wor", "ld"], ("world",), "Hello ", True),
        (["ab", "c##", "#d"], ("###",), "abc", True),
        (["a#", "#b"], ("###",), "a##b", False),
        (["xy"], ("y", "xy"), "", True),
        (["plain text"], (), "plain text", False),
    ],
)
def test_stop_matcher_cuts_across_pieces(
    pieces: list[str], stops: tuple[str, ...], emitted: str, stopped: bool
) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.push(p) for p in pieces)
    out += matcher.flush()
    assert (out, matcher.stopped) == (emitted, stopped)


def test_stop_matcher_holds_only_a_possible_prefix() -> None:
    matcher = StopMatcher(("STOP",))
    assert matcher.push("abcST") == "abc"
    assert matcher.push("x") == "STx"


def test_check_context() -> None:
    check_context(10, 20, 30)
    with pytest.raises(ContextOverflow, match="prompt has 11 tokens"):
        check_context(11, 20, 30)


BYTE_TABLE = {i: bytes([b]) for i, b in enumerate(b"one two END three")}


def run(
    tokens: list[int], params: SamplingParams, cancel_after: int | None = None
) -> list[TokenChunk | Completion]:
    closed = []

    def steps() -> Iterator[int]:
        try:
            yield from tokens
        finally:
            closed.append(True)

    cancel = threading.Event()
    out: list[TokenChunk | Completion] = []
    for item in stream_tokens(
        steps(),
        detokenizer=IncrementalDetokenizer(BYTE_TABLE.__getitem__),
        is_end=lambda t: t == 99,
        params=params,
        prompt_tokens=3,
        cancel=cancel,
    ):
        out.append(item)
        if cancel_after is not None and len(out) == cancel_after:
            cancel.set()
    assert closed == [True]
    return out


def text_of(items: list[TokenChunk | Completion]) -> str:
    return "".join(i.text for i in items if isinstance(i, TokenChunk))


def test_stream_stops_at_stop_string_mid_token() -> None:
    items = run(list(BYTE_TABLE), SamplingParams(stop=("END",)))
    done = items[-1]
    assert isinstance(done, Completion) and done.finish_reason == "stop"
    assert text_of(items) == "one two "
    assert done.completion_tokens == len("one two END")


def test_stream_length_and_end_token() -> None:
    items = run(list(BYTE_TABLE), SamplingParams(max_tokens=5))
    assert text_of(items) == "one t"
    assert items[-1] == Completion("length", 3, 5, items[-1].prompt_eval_ns, items[-1].eval_ns)  # type: ignore[union-attr]
    items = run([0, 1, 99, 2], SamplingParams())
    assert text_of(items) == "on"
    assert isinstance(items[-1], Completion) and items[-1].finish_reason == "stop"


def test_stream_releases_held_stop_prefix_at_length() -> None:
    items = run(list(BYTE_TABLE), SamplingParams(max_tokens=9, stop=("END",)))
    assert text_of(items) == "one two E"


def test_stream_cancel() -> None:
    items = run(list(BYTE_TABLE), SamplingParams(), cancel_after=2)
    done = items[-1]
    assert isinstance(done, Completion)
    assert (done.finish_reason, done.completion_tokens) == ("cancelled", 2)
