"""The agent's recent log records in memory, for the `logs` command.

`LogBuffer` is a logging handler that keeps the newest records (bounded by count and by
bytes); `logs_action` answers `logs` with the records since a time, at or above a level,
newest last, clipped to a byte budget that fits a command result.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from agent.fleet.commands import Action, CommandFailed

MAX_RECORDS = 5000
MAX_BUFFER_BYTES = 2 * 1024 * 1024
MAX_RESULT_BYTES = 48 * 1024  # a command result is at most 64 KiB of JSON
MAX_LINE_CHARS = 2000
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


@dataclass(frozen=True)
class LogLine:
    """One formatted record."""

    created: float
    level: int
    text: str


class LogBuffer(logging.Handler):
    """Keeps the newest records, at most MAX_RECORDS and about MAX_BUFFER_BYTES."""

    def __init__(self, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BUFFER_BYTES) -> None:
        super().__init__(logging.DEBUG)
        self._lines: deque[LogLine] = deque(maxlen=max_records)
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Store one record (formatted now, clipped to MAX_LINE_CHARS)."""
        try:
            text = _FORMAT.format(record)[:MAX_LINE_CHARS]
        except Exception:
            self.handleError(record)
            return
        line = LogLine(record.created, record.levelno, text)
        with self._lines_lock:
            if len(self._lines) == self._lines.maxlen:
                self._bytes -= len(self._lines[0].text)
            self._lines.append(line)
            self._bytes += len(text)
            while self._bytes > self._max_bytes and self._lines:
                self._bytes -= len(self._lines.popleft().text)

    def since(self, since: float, level: int, max_bytes: int) -> tuple[list[str], bool]:
        """Lines at or above `level` created at or after `since`, newest kept within max_bytes."""
        with self._lines_lock:
            lines = [x.text for x in self._lines if x.created >= since and x.level >= level]
        out: list[str] = []
        used = 0
        for text in reversed(lines):
            size = len(json.dumps(text)) + 2  # as it travels: quoted, escaped, comma
            if used + size > max_bytes:
                return out[::-1], True
            out.append(text)
            used += size
        return out[::-1], False


def logs_action(buffer: LogBuffer) -> Action:
    """`logs` with args `since_s` (seconds back, default 600), `level`, `max_bytes`."""

    def logs(args: Mapping[str, object]) -> dict[str, object]:
        since_s = args.get("since_s", 600)
        level = args.get("level", "info")
        max_bytes = args.get("max_bytes", MAX_RESULT_BYTES)
        if not isinstance(since_s, int | float) or isinstance(since_s, bool) or since_s < 0:
            raise CommandFailed("since_s must be a number of seconds >= 0")
        if level not in LEVELS:
            raise CommandFailed(f"level must be one of {', '.join(LEVELS)}")
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= MAX_RESULT_BYTES:
            raise CommandFailed(f"max_bytes must be an integer from 1 to {MAX_RESULT_BYTES}")
        lines, truncated = buffer.since(time.time() - float(since_s), LEVELS[str(level)], max_bytes)
        return {"lines": lines, "count": len(lines), "truncated": truncated}

    return logs
