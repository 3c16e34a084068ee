"""Shared control plane fixtures: a real database (SQLite and PostgreSQL), the app, tokens,
and a real Mosquitto wired to the app's password/ACL files.

    def test_x(cp_client, admin_headers): ...           # app on SQLite and on PostgreSQL
    def test_y(broker_client, broker, admin_headers): ...  # same, plus a live broker
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from controlplane import bridge as bridge_module
from controlplane import crud, telemetry_retention
from controlplane.broker_tls import load_or_create_ca, write_broker_tls
from controlplane.core.config import Settings
from controlplane.core.db import migrate
from controlplane.db_models import Role
from controlplane.main import create_app
from tests.controlplane.live import LiveServer
from tests.support.mosquitto import MosquittoBroker, free_port

POSTGRES_ADMIN_DSN = os.environ.get(
    "EDGEFLEET_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CP_MQTT_PASSWORD = "cp-test-password"
_POSTGRES_ENABLED = os.environ.get("EDGEFLEET_TEST_POSTGRES", "1") != "0"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated, dropped afterwards."""
    if not _POSTGRES_ENABLED:
        pytest.skip("EDGEFLEET_TEST_POSTGRES=0")
    name = f"edgefleet_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database made once per session; tests get copies (migrating: ~1 s)."""
    path = tmp_path_factory.mktemp("cp-template") / "controlplane.db"
    migrate(f"sqlite:///{path}")
    return path


def sqlite_copy(template: Path, path: Path) -> str:
    """A private copy of the migrated template at `path` (the backup API includes the WAL)."""
    with sqlite3.connect(template) as source, sqlite3.connect(path) as target:
        source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{path}"


_SCHEMA_CACHE: dict[str, tuple[list[str], list[str]]] = {}  # url -> (tables, sequences)


def _wipe(url: str) -> None:
    """Empty the tables a test used and restart every sequence (TRUNCATE of all: ~0.8 s)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if url not in _SCHEMA_CACHE:
                tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
                sequences = list(
                    conn.execute(
                        text("SELECT sequence_name FROM information_schema.sequences")
                    ).scalars()
                )
                _SCHEMA_CACHE[url] = (tables, sequences)
            tables, sequences = _SCHEMA_CACHE[url]
            probe = " UNION ALL ".join(
                f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables
            )
            used = list(conn.execute(text(probe)).scalars()) if tables else []
            if used:
                quoted = ", ".join(f'"{t}"' for t in used)
                conn.execute(text(f"TRUNCATE {quoted} CASCADE"))
            for name in sequences:
                conn.execute(text(f'ALTER SEQUENCE "{name}" RESTART'))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty migrated database: a copy of the SQLite template, or PostgreSQL's wiped."""
    if request.param == "sqlite":
        return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "controlplane.db")
    url: str = request.getfixturevalue("postgres_url")
    _wipe(url)
    return url


@pytest.fixture
def cp_settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings with everything under tmp_path (no broker to reload)."""
    return Settings(
        data_dir=tmp_path / "cp",
        database_url=db_url,
        mqtt_cp_password=CP_MQTT_PASSWORD,
        public_url="http://testserver",
    )


@pytest.fixture
def cp_app(cp_settings: Settings) -> FastAPI:
    """The app (not started)."""
    return create_app(cp_settings)


@pytest.fixture
def cp_client(cp_app: FastAPI) -> Iterator[TestClient]:
    """A started app (migrated, keys created) behind a TestClient."""
    with TestClient(cp_app) as client:
        yield client


@pytest.fixture
def make_token(cp_settings: Settings) -> Iterator[Callable[[Role], str]]:
    """Create an operator token with a role in the test database; returns its secret."""
    engine = create_engine(cp_settings.database_url)

    def _make(role: Role) -> str:
        with Session(engine) as session:
            _token, secret = crud.create_api_token(session, name=f"test-{role.value}", role=role)
        return secret

    yield _make
    engine.dispose()


@pytest.fixture
def admin_token(make_token: Callable[[Role], str]) -> str:
    """An admin token's secret."""
    return make_token(Role.admin)


@pytest.fixture
def expired_token(cp_settings: Settings) -> str:
    """An admin token's secret that expired a second ago."""
    engine = create_engine(cp_settings.database_url)
    with Session(engine) as session:
        _token, secret = crud.create_api_token(
            session, name="old", role=Role.admin, expires_in=timedelta(seconds=-1)
        )
    engine.dispose()
    return secret


@pytest.fixture
def admin_headers(admin_token: str) -> dict[str, str]:
    """Authorization header for the admin token."""
    return {"Authorization": f"Bearer {admin_token}"}


BrokerTls = Literal["off", "server", "client_certs"]


@pytest.fixture
def broker_tls() -> BrokerTls:
    """How the broker's device listener is secured; a test module overrides this fixture:
    "server" (TLS, signed by the control plane's CA) or "client_certs" (TLS, and a device
    must show a client certificate from that CA)."""
    return "off"


@pytest.fixture
def broker(tmp_path: Path, broker_tls: BrokerTls) -> Iterator[MosquittoBroker]:
    """A real Mosquitto from deploy/mosquitto/edgefleet.conf on a free port."""
    files = None
    if broker_tls != "off":
        tls_dir = tmp_path / "cp" / "mqtt-tls"  # cp_settings' data dir: the CA enrollment uses
        ca = load_or_create_ca(tls_dir / "ca.crt", tls_dir / "ca.key")
        files = write_broker_tls(ca, tmp_path / "broker-tls", ["127.0.0.1", "localhost"])
    client_certs = broker_tls == "client_certs"
    with MosquittoBroker(tmp_path / "mqtt", tls=files, client_certs=client_certs) as running:
        yield running


@pytest.fixture
def broker_settings(
    cp_settings: Settings, broker: MosquittoBroker, broker_tls: BrokerTls
) -> Settings:
    """Settings whose password/ACL files are the broker's, SIGHUPing it on every change;
    devices are sent to the TLS listener when there is one."""
    tls = broker_tls != "off"
    return cp_settings.model_copy(
        update={
            "broker_password_file": broker.password_file,
            "broker_acl_file": broker.acl_file,
            "broker_pid": broker.pid,
            "mqtt_host": broker.host,
            "mqtt_port": broker.device_port if tls else broker.port,
            "mqtt_tls": tls,
        }
    )


@pytest.fixture
def broker_client(broker_settings: Settings) -> Iterator[TestClient]:
    """A started app that manages the live broker's credentials."""
    with TestClient(create_app(broker_settings)) as client:
        yield client


@pytest.fixture
def cp_server(broker_settings: Settings) -> Iterator[str]:
    """A real uvicorn serving the app (with the live broker) in a thread; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with LiveServer(broker_settings.model_copy(update={"public_url": url, "port": port})):
        yield url


@pytest.fixture
def fast_bridge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bridge reconnects at once; the retention job stays out of the way."""
    monkeypatch.setattr(bridge_module, "RECONNECT_MIN_DELAY_S", 0)
    monkeypatch.setattr(bridge_module, "RECONNECT_MAX_DELAY_S", 1)
    monkeypatch.setattr(telemetry_retention, "FIRST_RUN_DELAY_S", 3600.0)


@pytest.fixture
def fleet_client(broker_settings: Settings, fast_bridge: None) -> Iterator[TestClient]:
    """A started app with the MQTT bridge enabled against the live broker."""
    settings = broker_settings.model_copy(update={"mqtt_enabled": True})
    with TestClient(create_app(settings)) as client:
        assert client.app.state.bridge.wait_connected(15.0)
        yield client
