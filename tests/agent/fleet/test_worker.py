"""QueueWorker: items reach the one named worker thread in order; stop ends that thread."""

from __future__ import annotations

import threading

from agent.fleet.worker import QueueWorker


class Recorder(QueueWorker[int]):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.seen: list[tuple[int, str]] = []

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self.seen.append((item, threading.current_thread().name))


def test_items_are_worked_in_order_on_the_named_thread_until_stop() -> None:
    worker = Recorder()
    worker.start()
    for item in (1, 2, 3):
        worker._queue.put(item)
    worker.stop()
    assert worker.seen == [(1, "recorder"), (2, "recorder"), (3, "recorder")]
    assert worker._worker is not None and not worker._worker.is_alive()
