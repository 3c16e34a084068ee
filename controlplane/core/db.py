"""The database engine and Alembic migrations (Alembic owns the schema)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session, create_engine

from controlplane.errors import DatabaseUrlError

_LOGGER = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def sqlite_path(database_url: str) -> Path | None:
    """The file a SQLite URL names (None for in-memory databases and other backends)."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename (`?uri=true`): file:path?mode=...
        database = urlsplit(database).path
        if not database or url.query.get("mode") == "memory":
            return None
    return Path(database).expanduser()


def ensure_database_dir(database_url: str) -> None:
    """Create the directory a SQLite database file lives in, so a fresh data dir works."""
    path = sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def check_database_url(database_url: str) -> None:
    """Raise DatabaseUrlError when the URL is malformed or its driver is not installed."""
    try:
        dialect = make_url(database_url).get_dialect()
        dialect.import_dbapi()
    except ArgumentError as exc:  # malformed URL, unknown backend (NoSuchModuleError)
        raise DatabaseUrlError(f"database URL {_redact(database_url)!r}: {exc}") from exc
    except ImportError as exc:
        raise DatabaseUrlError(
            f"database URL {_redact(database_url)!r} needs the Python driver "
            f"{exc.name or exc}, which is not installed"
        ) from exc


def _redact(database_url: str) -> str:
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return database_url.split("@")[-1]


# Enough connections for the API's requests in flight (api/limits.py caps them at 8) plus
# the background services, so a request never waits for a connection.
POOL_SIZE = 20
MAX_OVERFLOW = 20


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; SQLite gets foreign keys on, WAL, synchronous=NORMAL, a busy
    timeout and a pool sized for the API's worker threads."""
    check_database_url(database_url)
    if database_url.startswith("sqlite"):
        ensure_database_dir(database_url)
        pool: dict[str, Any] = {}
        if sqlite_path(database_url) is not None:  # in-memory databases use one connection
            pool = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL syncs at checkpoints instead of every commit; a power loss can
            # lose the last commits but never corrupts the database.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        hide_parameters=True,  # error messages and logs never show values (password hashes)
    )


def check_database(database_url: str) -> None:
    """Connect once, so a wrong or unreachable database fails before a server starts."""
    engine = make_engine(database_url)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def alembic_config(database_url: str) -> Config:
    """Alembic config pointing at controlplane/alembic, no .ini file needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate(database_url: str) -> None:
    """Upgrade the database to every head revision (H7/H8 branches included)."""
    _LOGGER.info("migrating %s", database_url.split("@")[-1])
    check_database_url(database_url)
    ensure_database_dir(database_url)
    command.upgrade(alembic_config(database_url), "heads")


@contextmanager
def migrated_session(database_url: str) -> Iterator[Session]:
    """Migrate, then a session on an engine of its own, disposed afterwards (CLI commands)."""
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()
