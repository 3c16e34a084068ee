"""Reported device states recorded in bulk (crud.mark_device_states), SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane import crud
from controlplane.core.db import make_engine, migrate
from controlplane.db_models import Device, as_utc
from models import protocol
from tests.controlplane.helpers import mark_device_state


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)
    eng = make_engine(db_url)
    with Session(eng) as session:
        for d in ("a", "b"):
            session.add(
                Device(
                    id=d,
                    device_class="cpu",
                    agent_version="0.1",
                    mqtt_password_hash="x",
                    artifact_token_hash=f"h-{d}",
                )
            )
        session.commit()
    yield eng
    eng.dispose()


def report(
    device_id: str, state: dict[str, object], seconds: float = 0, online: bool = True
) -> crud.StateReport:
    seen = protocol.utcnow() + timedelta(seconds=seconds)
    return crud.StateReport(device_id=device_id, online=online, state=state, seen_at=seen)


def test_one_statement_records_many_devices(engine: Engine) -> None:
    active = {"name": "tiny", "version": "2.0"}
    with Session(engine) as session:
        n = crud.mark_device_states(
            session,
            reports=[
                report("a", {"seq": 1, "agent_version": "0.2", "active": active}),
                report("a", {"seq": 2, "agent_version": "0.3", "active": active}, seconds=1),
                report("b", {"seq": 1, "agent_version": "", "device_class": "jetson"}),
                report("unknown", {"seq": 1}),
            ],
        )
        session.commit()
    assert n == 2  # the last report of a device wins; unknown devices are skipped
    with Session(engine) as session:
        a, b = session.get(Device, "a"), session.get(Device, "b")
        assert a is not None and b is not None
        assert (a.online, a.state["seq"], a.agent_version, a.active_model) == (
            True,
            2,
            "0.3",
            "tiny:2.0",
        )
        assert (b.agent_version, b.device_class, b.active_model) == ("0.1", "jetson", None)


def test_last_seen_never_goes_back_and_active_none_clears(engine: Engine) -> None:
    with Session(engine) as session:
        first = mark_device_state(
            session,
            device_id="a",
            online=True,
            seen_at=protocol.utcnow(),
            state={"active": {"name": "m", "version": "1"}},
        )
        assert first is not None and first.last_seen is not None
        seen = as_utc(first.last_seen)
        older = protocol.utcnow() - timedelta(hours=1)
        will = mark_device_state(
            session, device_id="a", online=False, state={"active": None}, seen_at=older
        )
    assert will is not None and will.last_seen is not None
    assert not will.online and as_utc(will.last_seen) == seen
    assert will.active_model is None
    with Session(engine) as session:
        assert (
            mark_device_state(
                session, device_id="nope", online=True, state={}, seen_at=protocol.utcnow()
            )
            is None
        )
