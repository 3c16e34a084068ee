"""The bridge's database writer: one thread drains inbound messages into one transaction.

Messages wait in a bounded queue (a full queue blocks the MQTT thread, which holds back
acknowledgements and so slows the broker down instead of dropping anything). Each batch
checks its device ids once, stores telemetry idempotently, records state, runs the recorders
other components added (rollout events, command results) in the same transaction, commits,
and only then acknowledges the messages to the broker: nothing is acknowledged before it is
stored.

A batch the database refuses while it still answers is split until the message it refuses
is alone; that message is counted against its device, dropped and acknowledged, so one bad
message never holds back the others. While the database does not answer at all, the batch
is retried with backoff and nothing is acknowledged (the broker keeps the messages).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError, StatementError
from sqlmodel import Session, col, select

from controlplane.db_models import Device
from controlplane.errors import DatabaseUnavailable
from controlplane.ingest_counters import BridgeStats, save_counts
from controlplane.telemetry_states import record_states
from controlplane.telemetry_store import insert_samples, sample_rows, to_utc
from models import protocol

_LOGGER = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.05  # longest a message waits for its batch
BATCH_MAX = 500  # messages per transaction
BATCH_POLL_S = 0.005  # how often a filling batch looks for more
QUEUE_MAX = 20_000
QUEUE_PUT_TIMEOUT_S = 1.0
COUNTER_SAVE_INTERVAL_S = 1.0  # an idle writer saves new drop counts this often
RETRY_MIN_S = 0.5  # while the database does not answer, retry a batch after this...
RETRY_MAX_S = 10.0  # ...doubling up to this
# Samples dated later than this past the control plane's clock are dropped (counted against the
# device as `future_samples`): retention would never delete them, and a device's clock that
# runs ahead should be seen, not charted.
CLOCK_AHEAD_MAX = timedelta(minutes=5)


@dataclass
class Inbound:
    """A validated message from a device topic, waiting to be written."""

    leaf: str
    device_id: str
    message: BaseModel
    received_at: datetime
    ack: Callable[[], None] | None = None
    handled: bool = False  # written or dropped, and acknowledged


@dataclass(frozen=True)
class WriterStatus:
    """How far behind the writer is, for /health."""

    queued: int
    lag_s: float  # age of the oldest message not yet written (0 when none waits)
    database_ok: bool  # False while batches are held back because the database is down
    last_write_at: datetime | None


Recorder = Callable[[Session, list[Inbound]], None]
"""Stores its messages in the batch's session; the writer commits (and then acknowledges)."""


class IngestWriter:
    """Batches inbound messages into transactions on a background thread."""

    def __init__(self, engine: Engine, *, stats: BridgeStats, keep_raw: timedelta) -> None:
        self._engine = engine
        self._stats = stats
        self._keep_raw = keep_raw
        self._recorders: list[tuple[frozenset[str], Recorder]] = []
        self._queue: queue.Queue[Inbound | None] = queue.Queue(maxsize=QUEUE_MAX)  # None: wake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy_since: datetime | None = None  # oldest message of the batch being written
        self._database_ok = True
        self._last_write_at: datetime | None = None

    def add_recorder(self, leaves: frozenset[str], recorder: Recorder) -> None:
        """Store messages on `leaves` with `recorder` inside each batch's transaction."""
        self._recorders.append((leaves, recorder))

    def start(self) -> None:
        """Start the writer thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # a full queue means the writer is not idle
            self._queue.put_nowait(None)  # wake a writer waiting on an empty queue
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, item: Inbound) -> None:
        """Queue one message; blocks while the queue is full (back-pressure on the broker)."""
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=QUEUE_PUT_TIMEOUT_S)
                return
            except queue.Full:
                _LOGGER.warning("telemetry writer queue full; holding back the broker")
        self._stats.incr("dropped", device_id=item.device_id)

    def status(self) -> WriterStatus:
        """Queue length, lag and database health as of now."""
        with self._queue.mutex:
            head = next((i for i in self._queue.queue if i is not None), None)
            queued = len(self._queue.queue)
        waiting = [t for t in (self._busy_since, head.received_at if head else None) if t]
        lag = (protocol.utcnow() - min(waiting)).total_seconds() if waiting else 0.0
        return WriterStatus(
            queued=queued,
            lag_s=max(0.0, lag),
            database_ok=self._database_ok,
            last_write_at=self._last_write_at,
        )

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            batch = self._collect()
            if batch:
                self._busy_since = min(item.received_at for item in batch)
                try:
                    self._drain(batch)
                finally:
                    self._busy_since = None
            self._save_counters()

    def _drain(self, batch: list[Inbound]) -> None:
        """Write the batch, isolating bad messages; wait out a database that does not answer."""
        delay = RETRY_MIN_S
        pending = batch
        while pending:
            try:
                self._write_isolating(pending)
                self._database_ok = True
                return
            except DatabaseUnavailable as exc:
                self._database_ok = False
                self._stats.incr("write_errors")
                pending = [item for item in pending if not item.handled]
                _LOGGER.warning(
                    "database unavailable (%s); %s messages wait, retry in %ss",
                    _describe(exc.__cause__ or exc),
                    len(pending),
                    delay,
                )
            if self._stopping.wait(delay):
                # Unacknowledged messages come back from the broker; the writes are idempotent.
                _LOGGER.warning("stopping with %s messages unwritten", len(pending))
                return
            delay = min(delay * 2, RETRY_MAX_S)

    def _write_isolating(self, items: list[Inbound]) -> None:
        try:
            self.write(items)
        except Exception as exc:
            if not self._database_answers():
                raise DatabaseUnavailable("the database does not answer; the batch waits") from exc
            if len(items) == 1:
                self._quarantine(items[0], exc)
                return
            self._stats.incr("write_errors")
            half = len(items) // 2
            self._write_isolating(items[:half])
            self._write_isolating(items[half:])
            return
        self._last_write_at = protocol.utcnow()
        for item in items:
            self._acknowledge(item)

    def _quarantine(self, item: Inbound, exc: Exception) -> None:
        self._stats.incr("quarantined", device_id=item.device_id)
        _LOGGER.warning(
            "dropped %s from device %s: the database refused it (%s)",
            item.leaf,
            item.device_id,
            _describe(exc),
        )
        self._acknowledge(item)

    @staticmethod
    def _acknowledge(item: Inbound) -> None:
        item.handled = True
        if item.ack is not None:
            item.ack()

    def _database_answers(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def _save_counters(self) -> None:
        unsaved = self._stats.take_unsaved()
        if not unsaved:
            return
        try:
            save_counts(self._engine, unsaved)
        except Exception as exc:
            self._stats.give_back(unsaved)
            _LOGGER.warning("cannot save ingest counters yet (%s)", _describe(exc))

    def _collect(self) -> list[Inbound]:
        try:  # an idle writer sleeps here until a message, stop() or time to save counters
            first = self._queue.get(timeout=COUNTER_SAVE_INTERVAL_S)
        except queue.Empty:
            return []
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_INTERVAL_S
        # The rest of the batch is polled for, not waited on: a writer blocked in get() is
        # woken by every put(), a thread switch per message (15 % of the MQTT thread's time).
        while True:
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # stop(): write what we have
                    return batch
                batch.append(item)
            remaining = deadline - time.monotonic()
            if len(batch) >= BATCH_MAX or remaining <= 0 or self._stopping.is_set():
                return batch
            time.sleep(min(remaining, BATCH_POLL_S))

    def write(self, batch: list[Inbound]) -> list[Inbound]:
        """Write one batch in one transaction; returns the messages from known devices."""
        with Session(self._engine, expire_on_commit=False) as session:
            ids = {item.device_id for item in batch}
            # Each device's class and model key its samples' minutes (telemetry_minute).
            allowed = {
                device_id: (device_class or "", model or "")
                for device_id, device_class, model in session.exec(
                    select(Device.id, Device.device_class, Device.active_model).where(
                        col(Device.id).in_(ids), col(Device.revoked_at).is_(None)
                    )
                )
            }
            accepted: list[Inbound] = []
            counts: Counter[str] = Counter()
            rows: list[dict[str, Any]] = []
            seen: dict[str, datetime] = {}
            states: dict[str, Inbound] = {}
            now = to_utc(protocol.utcnow())
            oldest, newest = now - self._keep_raw, now + CLOCK_AHEAD_MAX
            for item in batch:
                if item.device_id not in allowed:
                    self._stats.incr("rejected", device_id=item.device_id)
                    _LOGGER.warning(
                        "dropped %s from unknown or revoked device %s", item.leaf, item.device_id
                    )
                    continue
                accepted.append(item)
                if isinstance(item.message, protocol.Telemetry):
                    fresh, ahead = [], 0
                    for row in sample_rows(item.device_id, item.message):
                        if row["ts"] < oldest:
                            counts["stale_samples"] += 1
                        elif row["ts"] > newest:
                            ahead += 1
                        else:
                            fresh.append(row)
                    self._stats.incr("future_samples", ahead, device_id=item.device_id)
                    rows += fresh
                    seen[item.device_id] = max(
                        seen.get(item.device_id, item.received_at), item.received_at
                    )
                elif isinstance(item.message, protocol.DeviceState):
                    states[item.device_id] = item  # the last state in a batch wins
            counts["duplicate_samples"] += len(rows) - insert_samples(session, rows, groups=allowed)
            if seen:
                # One statement for the whole batch: last_seen is as coarse as a batch (ms).
                when = max(seen.values())
                session.execute(
                    update(Device)
                    .where(col(Device.id).in_(list(seen)))
                    .where(or_(col(Device.last_seen).is_(None), col(Device.last_seen) < when))
                    .values(last_seen=when)
                )
            counts["stale_states"] += record_states(
                session,
                [
                    (item.device_id, item.message, item.received_at)
                    for item in states.values()
                    if isinstance(item.message, protocol.DeviceState)
                ],
            )
            for leaves, recorder in self._recorders:
                mine = [item for item in accepted if item.leaf in leaves]
                if mine:
                    recorder(session, mine)
            session.commit()
        counts["persisted"] += len(accepted)
        for key, amount in counts.items():
            self._stats.incr(key, amount)
        return accepted


def _describe(exc: BaseException) -> str:
    """The database's own words, never the statement or its parameters (secrets live there)."""
    cause = exc.orig if isinstance(exc, StatementError) else exc
    if cause is None or isinstance(cause, SQLAlchemyError):
        return type(exc).__name__
    first = str(cause).splitlines()[0][:200] if str(cause) else ""
    return f"{type(cause).__name__}: {first}"
