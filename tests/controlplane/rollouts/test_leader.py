"""Exactly one replica drives rollouts: advisory lock on PostgreSQL, lease row on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from controlplane.core.db import make_engine, migrate
from controlplane.rollouts.leader import Leadership


@pytest.fixture
def engines(db_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database, as two control-plane replicas would have."""
    migrate(db_url)
    first, second = make_engine(db_url), make_engine(db_url)
    yield first, second
    first.dispose()
    second.dispose()


def test_one_replica_leads_and_the_other_takes_over_when_it_lets_go(
    engines: tuple[Engine, Engine],
) -> None:
    a = Leadership(engines[0], "replica-a")
    b = Leadership(engines[1], "replica-b")
    assert a.acquire() is True
    assert b.acquire() is False
    assert a.acquire() is True  # keeping it is idempotent
    assert b.acquire() is False
    a.release()
    assert b.acquire() is True
    assert a.acquire() is False
    b.release()


def test_an_expired_lease_passes_to_another_replica(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's advisory lock ends with its connection, not by time")
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        crashed = Leadership(engine, "crashed", lease_s=-1.0)  # its lease is already over
        assert crashed.acquire() is True
        assert Leadership(engine, "replica-b").acquire() is True
    finally:
        engine.dispose()
