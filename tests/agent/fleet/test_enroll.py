"""Enrollment against a real control plane (uvicorn, SQLite; no broker needed)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from agent.fleet.enroll import (
    CREDENTIALS_FILE,
    EnrollmentError,
    enroll,
    ensure_enrolled,
    load_enrollment,
)
from controlplane import crud
from controlplane.core.config import Settings
from controlplane.core.db import make_engine, migrate
from controlplane.db_models import Role
from tests.e2e.harness import HARDWARE, run_control_plane
from tests.support.mosquitto import free_port


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "cp",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_cp_password="x",
    )
    settings.data_dir.mkdir(parents=True)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        _row, admin = crud.create_api_token(session, name="t", role=Role.admin)
    engine.dispose()
    with run_control_plane(settings) as url:
        yield url, admin


def new_token(url: str, admin: str) -> str:
    resp = httpx.post(
        f"{url}/api/v1/enrollment-tokens",
        json={"labels": {"site": "lab"}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    return str(resp.json()["token"])


def test_enroll_stores_private_credentials(control_plane: tuple[str, str], tmp_path: Path) -> None:
    url, admin = control_plane
    data = tmp_path / "agent"
    got = enroll(url, new_token(url, admin), data, hardware=HARDWARE, agent_version="t")
    assert got.device_id.startswith("dev-") and got.labels == {"site": "lab"}
    mode = stat.S_IMODE((data / CREDENTIALS_FILE).stat().st_mode)
    assert mode == 0o600
    assert load_enrollment(data) == got
    assert len(got.trusted_keys()) >= 1
    assert got.artifact_headers()["Authorization"].startswith("Bearer ")
    again = ensure_enrolled(None, None, data, hardware=HARDWARE, agent_version="t")
    assert again.device_id == got.device_id


def test_used_token_is_refused_with_advice(control_plane: tuple[str, str], tmp_path: Path) -> None:
    url, admin = control_plane
    token = new_token(url, admin)
    enroll(url, token, tmp_path / "a", hardware=HARDWARE, agent_version="t")
    with pytest.raises(EnrollmentError, match="ask an operator for a new one"):
        enroll(url, token, tmp_path / "b", hardware=HARDWARE, agent_version="t")
    assert not (tmp_path / "b" / CREDENTIALS_FILE).exists()


def test_not_enrolled_without_token_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="enrollment token"):
        ensure_enrolled("http://127.0.0.1:1", None, tmp_path, hardware={}, agent_version="t")


def test_unreachable_control_plane(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="cannot reach"):
        enroll(f"http://127.0.0.1:{free_port()}", "eft_x", tmp_path, hardware={}, agent_version="t")
