"""Engine.generate for batching engines: one request through a RequestScheduler, read in order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

from agent.engines.base import Completion, SamplingParams, TokenChunk
from agent.engines.scheduling import BatchRequest, RequestScheduler


def generate_scheduled(
    scheduler: RequestScheduler,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    cancel: threading.Event | None,
) -> Iterator[TokenChunk | Completion]:
    """Chunks, then one Completion; a caller that cancels or stops reading frees the slot.

    After a cancel nothing more is yielded, and a cancelled Completion counts the tokens the
    caller saw (the worker may be a step ahead).
    """
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    request = BatchRequest(list(prompt_ids), params, items.put, cancel or threading.Event())
    scheduler.submit(request)
    seen = 0
    try:
        while True:
            item = items.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                if request.cancel.is_set() and item.finish_reason == "cancelled":
                    item = replace(item, completion_tokens=min(item.completion_tokens, seen))
                yield item
                return
            if not request.cancel.is_set():
                assert isinstance(item, TokenChunk)
                seen += item.token_id >= 0
                yield item
    finally:
        request.cancel.set()
