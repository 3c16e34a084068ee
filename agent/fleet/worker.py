"""`QueueWorker`: work handed from other threads to one daemon thread through a queue."""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")

STOP_TIMEOUT_S = 10.0  # how long `stop` waits for the item being worked on


class QueueWorker(Generic[T]):
    """One named daemon thread running `_run`, which takes items from `_queue` until None.

    Subclasses put work on `_queue` from any thread and write `_run`; `stop` queues the None.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[T | None] = queue.Queue()
        self._worker_name = name
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread."""
        self._worker = threading.Thread(target=self._run, name=self._worker_name, daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop after the item being worked on (what is still queued is dropped)."""
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=STOP_TIMEOUT_S)

    def _run(self) -> None:
        raise NotImplementedError
