"""The fleet summary the dashboard's pages share: read once per SUMMARY_MAX_AGE_S."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.dashboard.routes import COOKIE
from controlplane.telemetry_summary import SUMMARY_MAX_AGE_S, SummaryCache
from tests.controlplane.helpers import enroll, sql_statements


def test_a_summary_is_reused_until_it_is_max_age_old(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    engine: Engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    clock = [1000.0]
    cache = SummaryCache(clock=lambda: clock[0])
    enroll(cp_client, admin_headers)
    with Session(engine) as session:
        first = cache.get(session)
        enroll(cp_client, admin_headers)
        clock[0] += SUMMARY_MAX_AGE_S / 2
        with sql_statements(engine) as seen:
            again = cache.get(session)
        assert again is first and first.total == 1 and not seen
        clock[0] += SUMMARY_MAX_AGE_S / 2
        assert cache.get(session).total == 2


def test_the_overview_and_models_pages_share_one_read(
    cp_client: TestClient, admin_headers: dict[str, str], admin_token: str
) -> None:
    engine: Engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    enroll(cp_client, admin_headers)
    cp_client.cookies.set(COOKIE, admin_token)
    with sql_statements(engine) as seen:
        assert cp_client.get("/").status_code == 200
        assert cp_client.get("/models").status_code == 200
    grouped = [sql for sql in seen if "GROUP BY device.device_class" in sql]
    assert len(grouped) == 1
