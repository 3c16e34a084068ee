"""An on-disk outbox for events and telemetry, replayed in order once the broker is back.

SQLite in WAL mode with synchronous=FULL: an append that returned survives a power cut. Rows
leave the outbox only after the broker acknowledged them, so delivery is at-least-once and in
append order; receivers de-duplicate (docs/protocol.md).

The outbox is bounded by rows and by payload bytes on disk. When an append would pass
either bound, the oldest droppable rows (telemetry) make room; events and command results
are never dropped. Dropped rows are counted (kept across restarts) for the agent's metrics.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from models.protocol import device_topic

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_PAYLOAD_BYTES = 1_000_000  # the shipped broker hangs up on packets over 1 MiB (max_packet_size)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    droppable INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox_counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
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

    def __init__(
        self, path: Path, max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._closed = False
        self.appended = threading.Event()  # set by every append; the MQTT drainer waits on it
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._rows, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
        ).fetchone()
        found = self._db.execute(
            "SELECT value FROM outbox_counter WHERE name = 'dropped'"
        ).fetchone()
        self.dropped = int(found[0]) if found else 0  # telemetry rows dropped, ever

    def append(self, topic: str, payload: bytes, qos: int = 1, droppable: bool = False) -> int:
        """Store one message; when full, the oldest droppable rows (telemetry) make room."""
        with self._lock:
            self._make_room(len(payload))
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, droppable) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, int(droppable)),
            )
            self._rows += 1
            self._bytes += len(payload)
            seq = int(cur.lastrowid or 0)
        self.appended.set()
        return seq

    def put(
        self,
        device_id: str,
        leaf: str,
        message: BaseModel,
        *,
        qos: int = 1,
        droppable: bool = False,
    ) -> None:
        """Store a message for `ef/v1/devices/{id}/{leaf}`; it leaves once the broker is there."""
        payload = message.model_dump_json().encode()
        if len(payload) > MAX_PAYLOAD_BYTES:  # it could never leave the outbox
            _LOGGER.error(
                "dropped a %s message of %s bytes: the broker takes at most %s",
                leaf,
                len(payload),
                MAX_PAYLOAD_BYTES,
            )
            return
        self.append(device_topic(device_id, leaf), payload, qos, droppable)

    def sink(self, device_id: str, leaf: str) -> Callable[[BaseModel], None]:
        """A callable that puts each message it gets for `leaf` into the outbox."""

        def put(message: BaseModel) -> None:
            self.put(device_id, leaf, message)

        return put

    def _make_room(self, size: int) -> None:
        dropped = 0
        while self._rows and (
            self._rows + 1 > self.max_rows or self._bytes + size > self.max_bytes
        ):
            oldest = self._db.execute(
                "SELECT seq, LENGTH(payload) FROM outbox WHERE droppable=1 ORDER BY seq LIMIT 64"
            ).fetchall()
            if not oldest:
                break  # only events and results are left: they are never dropped
            for seq, length in oldest:
                if self._rows + 1 <= self.max_rows and self._bytes + size <= self.max_bytes:
                    break
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                self._rows -= 1
                self._bytes -= int(length)
                dropped += 1
        if dropped:
            self.dropped += dropped
            self._db.execute(
                "INSERT INTO outbox_counter (name, value) VALUES ('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (self.dropped,),
            )
            _LOGGER.warning(
                "outbox full: dropped %d oldest telemetry batches (%d in all)",
                dropped,
                self.dropped,
            )

    def stats(self) -> dict[str, int]:
        """Rows and payload bytes waiting, and telemetry rows dropped so far."""
        with self._lock:
            return {"rows": self._rows, "bytes": self._bytes, "dropped": self.dropped}

    def peek(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest `limit` messages, in order, without removing them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxEntry(int(s), str(t), bytes(p), int(q)) for s, t, p, q in rows]

    def ack(self, seqs: list[int]) -> None:
        """Remove messages the broker acknowledged; after close() they stay, to be sent again
        (the drainer may still be waiting for PUBACKs when the agent stops)."""
        if not seqs:
            return
        with self._lock:
            if self._closed:
                return
            marks = ",".join("?" * len(seqs))
            (gone,) = self._db.execute(
                f"SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE seq IN ({marks})",
                seqs,
            ).fetchone()
            removed = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", seqs)
            self._rows -= removed.rowcount
            self._bytes -= int(gone)

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._closed = True
            self._db.close()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
