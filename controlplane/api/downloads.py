"""At most `DOWNLOADS_PER_DEVICE` artifact downloads open at once per device.

An agent fetches one file at a time. Every open download takes its share of the control
plane's uplink, so a device that opened hundreds at once would starve the rest of the fleet
in the middle of a rollout. Past the cap a device gets 429 with Retry-After, which the
agent's fetches retry on (models.download.TRANSIENT_STATUSES).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from fastapi import Request

from controlplane.errors import ApiError

DOWNLOADS_PER_DEVICE = 4
RETRY_AFTER_S = 5


class OpenDownloads:
    """Each device's open downloads; thread-safe."""

    def __init__(self, per_device: int = DOWNLOADS_PER_DEVICE) -> None:
        self.per_device = per_device
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open(self, device_id: str) -> Callable[[], None]:
        """Count one more download of `device_id`; returns its `close` (idempotent).

        Raises ApiError 429 when the device already has `per_device` open.
        """
        with self._lock:
            if self._open[device_id] >= self.per_device:
                raise ApiError(
                    429,
                    "too_many_downloads",
                    f"device {device_id} already has {self.per_device} downloads open; "
                    f"retry in {RETRY_AFTER_S} s",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            self._open[device_id] += 1
        closed = False

        def close() -> None:
            nonlocal closed
            with self._lock:
                if closed:
                    return
                closed = True
                self._open[device_id] -= 1
                if self._open[device_id] <= 0:
                    del self._open[device_id]

        return close

    def count(self, device_id: str) -> int:
        """How many downloads `device_id` has open now."""
        with self._lock:
            return self._open[device_id]


def open_download(request: Request, device_id: str) -> Callable[[], None]:
    """`app.state.downloads.open(device_id)`: call once the download is known to exist."""
    downloads: OpenDownloads = request.app.state.downloads
    return downloads.open(device_id)
