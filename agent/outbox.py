"""An on-disk outbox for events and telemetry, replayed in order once the broker is back.

SQLite in WAL mode with synchronous=FULL: an append that returned survives a power cut. Rows
leave the outbox only after the broker acknowledged them, so delivery is at-least-once and in
append order; receivers de-duplicate (docs/protocol.md).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    droppable INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class OutboxEntry:
    """One message waiting for the broker."""

    seq: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """Durable FIFO of MQTT messages; safe to use from several threads."""

    def __init__(self, path: Path, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def append(self, topic: str, payload: bytes, qos: int = 1, droppable: bool = False) -> int:
        """Store one message; when full, the oldest droppable rows (telemetry) make room."""
        with self._lock:
            count = self._count()
            if count >= self.max_rows:
                dropped = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE droppable=1"
                    " ORDER BY seq LIMIT ?)",
                    (count - self.max_rows + 1,),
                ).rowcount
                if dropped:
                    _LOGGER.warning("outbox full: dropped %d oldest telemetry batches", dropped)
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, droppable) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, int(droppable)),
            )
            return int(cur.lastrowid or 0)

    def peek(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest `limit` messages, in order, without removing them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxEntry(int(s), str(t), bytes(p), int(q)) for s, t, p, q in rows]

    def ack(self, seqs: list[int]) -> None:
        """Remove messages the broker acknowledged."""
        if not seqs:
            return
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
