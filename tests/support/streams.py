"""Reading engine streams in tests: one generation's text, or several started together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from agent.engines.base import Completion, TokenChunk

A = TypeVar("A")
T = TypeVar("T")


def collect(stream: Iterable[TokenChunk | Completion]) -> tuple[str, Completion]:
    """The text of a generation's chunks and the Completion it ended with."""
    text, done = "", None
    for item in stream:
        if isinstance(item, TokenChunk):
            text += item.text
        else:
            done = item
    assert done is not None, "the stream ended without a Completion"
    return text, done


def run_together(run: Callable[[A], T], jobs: list[A], timeout: float = 30.0) -> list[T | None]:
    """`run(job)` for every job, all started at once on their own threads (None if one failed)."""
    results: list[T | None] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def one(i: int) -> None:
        start.wait()
        results[i] = run(jobs[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results
