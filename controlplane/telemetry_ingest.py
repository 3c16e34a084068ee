"""The bridge's database writer: one thread drains inbound messages into one transaction.

Messages wait in a bounded queue (a full queue blocks the MQTT thread, which holds back
acknowledgements and so slows the broker down instead of dropping anything). Each batch
checks its device ids once, stores telemetry idempotently, records state, commits, and only
then runs the handlers and acknowledges the messages to the broker.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from controlplane import crud
from controlplane.db_models import Device
from controlplane.telemetry_store import insert_samples, sample_rows, to_utc
from models import protocol

_LOGGER = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.05  # longest a message waits for its batch
BATCH_MAX = 500  # messages per transaction
QUEUE_MAX = 20_000
QUEUE_PUT_TIMEOUT_S = 1.0


@dataclass
class Inbound:
    """A validated message from a device topic, waiting to be written."""

    leaf: str
    device_id: str
    message: BaseModel
    received_at: datetime
    ack: Callable[[], None] | None = None


class BridgeStats:
    """Thread-safe counters (`received`, `invalid`, `rejected`, `persisted`, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def incr(self, key: str, amount: int = 1) -> None:
        """Add `amount` to counter `key`."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)


Dispatch = Callable[[Inbound], None]


class IngestWriter:
    """Batches inbound messages into transactions on a background thread."""

    def __init__(
        self, engine: Engine, *, stats: BridgeStats, keep_raw: timedelta, dispatch: Dispatch
    ) -> None:
        self._engine = engine
        self._stats = stats
        self._keep_raw = keep_raw
        self._dispatch = dispatch
        self._queue: queue.Queue[Inbound | None] = queue.Queue(maxsize=QUEUE_MAX)  # None: wake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

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
        self._stats.incr("dropped")

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            batch = self._collect()
            if not batch:
                continue
            try:
                accepted = self.write(batch)
            except Exception:
                # Unacknowledged messages come back from the broker; the writes are idempotent.
                _LOGGER.exception("telemetry writer failed on a batch of %s messages", len(batch))
                self._stats.incr("write_errors")
                time.sleep(BATCH_INTERVAL_S)
                continue
            for item in accepted:
                self._dispatch(item)
            for item in batch:
                if item.ack is not None:
                    item.ack()

    def _collect(self) -> list[Inbound]:
        first = self._queue.get()  # an idle writer sleeps here until a message or stop()
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_INTERVAL_S
        while len(batch) < BATCH_MAX:
            remaining = deadline - time.monotonic()
            try:
                item = (self._queue.get(timeout=remaining) if remaining > 0
                        else self._queue.get_nowait())  # fmt: skip
            except queue.Empty:
                break
            if item is None:
                break
            batch.append(item)
        return batch

    def write(self, batch: list[Inbound]) -> list[Inbound]:
        """Write one batch in one transaction; returns the messages from known devices."""
        with Session(self._engine, expire_on_commit=False) as session:
            ids = {item.device_id for item in batch}
            allowed = set(
                session.exec(
                    select(Device.id).where(
                        col(Device.id).in_(ids), col(Device.revoked_at).is_(None)
                    )
                )
            )
            accepted: list[Inbound] = []
            rows: list[dict[str, Any]] = []
            seen: dict[str, datetime] = {}
            states: dict[str, Inbound] = {}
            oldest = to_utc(protocol.utcnow()) - self._keep_raw
            for item in batch:
                if item.device_id not in allowed:
                    self._stats.incr("rejected")
                    _LOGGER.warning("dropped %s from unknown or revoked device %s",
                                    item.leaf, item.device_id)
                    continue
                accepted.append(item)
                if isinstance(item.message, protocol.Telemetry):
                    fresh = [r for r in sample_rows(item.device_id, item.message)
                             if r["ts"] >= oldest]
                    self._stats.incr("stale_samples", len(item.message.samples) - len(fresh))
                    rows += fresh
                    seen[item.device_id] = max(seen.get(item.device_id, item.received_at),
                                               item.received_at)
                elif isinstance(item.message, protocol.DeviceState):
                    states[item.device_id] = item  # the last state in a batch wins
            self._stats.incr("duplicate_samples", len(rows) - insert_samples(session, rows))
            if seen:
                # One statement for the whole batch: last_seen is as coarse as a batch (ms).
                when = max(seen.values())
                session.execute(
                    update(Device)
                    .where(col(Device.id).in_(list(seen)))
                    .where(or_(col(Device.last_seen).is_(None), col(Device.last_seen) < when))
                    .values(last_seen=when)
                )
            self._record_states(session, list(states.values()))
            session.commit()
        self._stats.incr("persisted", len(accepted))
        return accepted

    def _record_states(self, session: Session, items: list[Inbound]) -> None:
        """Fold the batch's states into its transaction: one SELECT, one executemany UPDATE."""
        if not items:
            return
        stored = dict(
            session.execute(
                select(Device.id, Device.state).where(
                    col(Device.id).in_([item.device_id for item in items])
                )
            ).all()
        )
        reports: list[crud.StateReport] = []
        for item in items:
            state = item.message
            assert isinstance(state, protocol.DeviceState)
            if state.online and _is_older(state, stored.get(item.device_id) or {}):
                self._stats.incr("stale_states")
                continue
            # An offline state (the Last Will) was written at connect time: it must not move
            # last_seen forward.
            seen_at = item.received_at if state.online else min(item.received_at,
                                                                to_utc(state.ts))  # fmt: skip
            reports.append(crud.StateReport(
                device_id=item.device_id, online=state.online,
                state=state.model_dump(mode="json"), seen_at=seen_at,
            ))  # fmt: skip
        crud.mark_device_states(session, reports=reports)


def _is_older(state: protocol.DeviceState, stored: dict[str, Any]) -> bool:
    """True when a redelivered state is older than the stored one by both seq and time."""
    try:
        stored_seq = int(stored.get("seq", -1))
        stored_ts = to_utc(datetime.fromisoformat(str(stored["ts"])))
    except (KeyError, TypeError, ValueError):
        return False
    return state.seq < stored_seq and to_utc(state.ts) < stored_ts
