"""The on-disk outbox: order, durability across reopen, acknowledgement, bounded size."""

from __future__ import annotations

from pathlib import Path

from agent.fleet.outbox import Outbox


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


def test_an_ack_after_close_keeps_the_messages_for_the_next_start(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    seqs = [box.append("t", f"m{i}".encode()) for i in range(2)]
    box.close()
    box.ack(seqs)  # the drainer's PUBACKs arriving while the agent stops
    assert [e.seq for e in Outbox(tmp_path / "outbox.db").peek()] == seqs


def test_full_outbox_drops_oldest_telemetry_but_keeps_events(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_rows=3)
    box.append("events", b"e1")
    box.append("telemetry", b"t1", droppable=True)
    box.append("telemetry", b"t2", droppable=True)
    box.append("events", b"e2")
    assert [e.payload for e in box.peek()] == [b"e1", b"t2", b"e2"]


def test_byte_bound_drops_oldest_telemetry_and_counts_it_across_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_bytes=30)
    box.append("events", b"e" * 10)
    for i in range(3):
        box.append("telemetry", bytes([48 + i]) * 10, droppable=True)
    box.append("cmd/result", b"r" * 10)  # 50 bytes wanted, 30 allowed: two telemetry go
    assert [e.payload[:1] for e in box.peek()] == [b"e", b"2", b"r"]
    assert box.stats() == {"rows": 3, "bytes": 30, "dropped": 2}
    box.append("events", b"x" * 10)  # only events and results left to drop: none are
    assert box.stats()["rows"] == 3 and box.stats()["dropped"] == 3
    box.append("events", b"y" * 10)
    assert [e.payload[:1] for e in box.peek()] == [b"e", b"r", b"x", b"y"]
    box.ack([e.seq for e in box.peek(2)])
    box.close()
    again = Outbox(tmp_path / "outbox.db", max_bytes=30)
    assert again.stats() == {"rows": 2, "bytes": 20, "dropped": 3}
