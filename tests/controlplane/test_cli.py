"""`edgefleet-cp` against a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, create_engine

from controlplane import crud
from controlplane.cli import main, parse_ttl
from controlplane.core.config import Settings
from controlplane.core.db import migrate, sqlite_path
from tests.support.mosquitto import free_port


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Settings:
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(tmp_path / "cp"))
    monkeypatch.setenv("EDGEFLEET_CP_DATABASE_URL", db_url)
    return Settings()


def test_admin_token(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create-admin-token", "--name", "root"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("efo_")
    engine = create_engine(cli_env.database_url)
    with Session(engine) as session:
        token = crud.get_api_token_by_secret(session, secret=secret)
        assert token is not None and token.role == "admin" and token.name == "root"
    engine.dispose()


def test_broker_config(cli_env: Settings, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    assert main(["broker-config", "--out", str(out)]) == 0
    conf = (out / "edgefleet.conf").read_text()
    assert f"password_file {out / 'passwd'}" in conf and "max_inflight_messages 1000" in conf
    assert (out / "passwd").read_text().startswith("edgefleet-cp:$7$")
    assert "pattern readwrite ef/v1/devices/%u/#" in (out / "acl").read_text()


def test_help_and_ttl() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert parse_ttl("1h").total_seconds() == 3600 and parse_ttl("90").total_seconds() == 90


def test_a_fresh_data_dir_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(data_dir))
    monkeypatch.delenv("EDGEFLEET_CP_DATABASE_URL", raising=False)
    assert main(["create-admin-token", "--name", "first"]) == 0
    assert capsys.readouterr().out.startswith("efo_")
    assert (data_dir / "controlplane.db").is_file()


def test_sqlite_uri_filename_gets_its_directory(tmp_path: Path) -> None:
    db = tmp_path / "uri" / "cp.db"
    migrate(f"sqlite:///file:{db}?uri=true")
    assert db.is_file()
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/edgefleet", "database error:"),
        ("mysql://user@127.0.0.1/edgefleet", "needs the Python driver MySQLdb"),
        ("postgres://user@127.0.0.1/edgefleet", "Can't load plugin"),
    ],
)
def test_bad_database_urls_fail_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    says: str,
) -> None:
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(tmp_path / "cp"))
    monkeypatch.setenv("EDGEFLEET_CP_DATABASE_URL", url.format(port=free_port()))
    assert main(["create-admin-token"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("edgefleet-cp: ") and says in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_serve_refuses_an_unreachable_database_before_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(tmp_path / "cp"))
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/edgefleet"
    monkeypatch.setenv("EDGEFLEET_CP_DATABASE_URL", url)
    assert main(["serve", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgefleet-cp: database error:") and err.count("\n") == 1


def test_admin_token_expiry(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine(cli_env.database_url)
    assert main(["create-admin-token", "--name", "short", "--expires", "12h"]) == 0
    short = capsys.readouterr().out.strip()
    assert main(["create-admin-token", "--name", "forever", "--expires", "never"]) == 0
    forever = capsys.readouterr().out.strip()
    with Session(engine) as session:
        found = crud.get_api_token_by_secret(session, secret=short)
        assert found is not None and found.expires_at is not None
        found = crud.get_api_token_by_secret(session, secret=forever)
        assert found is not None and found.expires_at is None
    engine.dispose()
    assert main(["create-admin-token", "--expires", "0d"]) == 2
