"""The database engine and Alembic migrations (Alembic owns the schema)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

_LOGGER = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def _ensure_sqlite_dir(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; SQLite gets foreign keys on, WAL and a busy timeout."""
    if database_url.startswith("sqlite"):
        _ensure_sqlite_dir(database_url)
        engine = create_engine(
            database_url, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(database_url, pool_pre_ping=True)


def alembic_config(database_url: str) -> Config:
    """Alembic config pointing at controlplane/alembic, no .ini file needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate(database_url: str) -> None:
    """Upgrade the database to every head revision (H7/H8 branches included)."""
    _LOGGER.info("migrating %s", database_url.split("@")[-1])
    _ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), "heads")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session for CLI and background work (routes use SessionDep)."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
