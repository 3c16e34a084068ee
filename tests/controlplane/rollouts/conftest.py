"""A migrated database (SQLite and PostgreSQL) with devices and a model, for rollout tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from controlplane.core.db import make_engine
from controlplane.db_models import Device, DeviceLabel, Model, ModelVersion
from tests.controlplane.conftest import _wipe as wipe
from tests.controlplane.conftest import sqlite_copy

ARTIFACTS = "http://cp.test/api/v1/artifacts"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: a fresh SQLite file, or the session's PostgreSQL one wiped."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        wipe(url)
        return url
    return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "cp.db")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test database, disposed afterwards."""
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose objects stay readable after commits."""
    with Session(engine, expire_on_commit=False) as s:
        yield s


def add_device(
    session: Session,
    device_id: str,
    *,
    labels: dict[str, str] | None = None,
    device_class: str = "cpu",
    active: str | None = None,
) -> None:
    """Enroll a device row directly."""
    session.add(
        Device(
            id=device_id,
            device_class=device_class,
            mqtt_password_hash="x",
            artifact_token_hash=f"h-{device_id}",
            active_model=active,
        )
    )
    session.flush()
    for key, value in (labels or {}).items():
        session.add(DeviceLabel(device_id=device_id, key=key, value=value))
    session.commit()


def add_model(session: Session, name: str = "tiny", version: str = "2.0") -> None:
    """Register a model version row directly."""
    row = session.exec(select(Model).where(Model.name == name)).first()
    if row is None:
        row = Model(name=name)
        session.add(row)
        session.flush()
    assert row.id is not None
    session.add(
        ModelVersion(
            model_id=row.id,
            version=version,
            key_id="k",
            manifest_json="{}",
            signature_json="{}",
        )
    )
    session.commit()
