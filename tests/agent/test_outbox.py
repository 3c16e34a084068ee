"""The on-disk outbox: order, durability across reopen, acknowledgement, bounded size."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Outbox


def test_entries_come_back_in_append_order_after_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    for i in range(5):
        box.append("t", f"m{i}".encode())
    box.close()
    reopened = Outbox(tmp_path / "outbox.db")
    assert [e.payload for e in reopened.peek()] == [f"m{i}".encode() for i in range(5)]


def test_ack_removes_only_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    seqs = [box.append("t", f"m{i}".encode(), qos=i % 2) for i in range(4)]
    box.ack(seqs[:2])
    left = box.peek()
    assert [e.seq for e in left] == seqs[2:]
    assert [e.qos for e in left] == [0, 1]
    assert len(box) == 2


def test_full_outbox_drops_oldest_telemetry_but_keeps_events(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_rows=3)
    box.append("events", b"e1")
    box.append("telemetry", b"t1", droppable=True)
    box.append("telemetry", b"t2", droppable=True)
    box.append("events", b"e2")
    assert [e.payload for e in box.peek()] == [b"e1", b"t2", b"e2"]
