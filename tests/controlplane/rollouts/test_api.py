"""The rollouts API, its roles and the dashboard page, on the real app (no broker)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.dashboard.routes import COOKIE
from controlplane.db_models import Role
from tests.controlplane.rollouts.conftest import add_device, add_model


def seed(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        add_model(session, version="2.0")
        add_device(session, "dev-a", labels={"site": "a"})
    engine.dispose()


def test_create_list_show_and_act(
    cp_client: TestClient, cp_settings: Settings, make_token: Callable[[Role], str]
) -> None:
    seed(cp_settings)
    operator = {"Authorization": f"Bearer {make_token(Role.operator)}"}
    viewer = {"Authorization": f"Bearer {make_token(Role.viewer)}"}
    body = {
        "model": "tiny:2.0",
        "selector": {"labels": {"site": "a"}},
        "strategy": {"waves": [{"count": 1}, {"percent": 50}]},
    }
    assert cp_client.post("/api/v1/rollouts", json=body, headers=viewer).status_code == 403
    assert cp_client.post("/api/v1/rollouts", json=body).status_code == 401
    resp = cp_client.post("/api/v1/rollouts", json=body, headers=operator)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "scheduled"
    assert [w["target"] for w in created["waves"]] == ["1", "50%", "100%"]
    assert created["manifest_url"].endswith("/api/v1/artifacts/tiny/2.0/manifest.json")
    listed = cp_client.get("/api/v1/rollouts", headers=viewer).json()
    assert [r["id"] for r in listed] == [created["id"]]
    rid = created["id"]
    paused = cp_client.post(f"/api/v1/rollouts/{rid}/pause", headers=operator)
    assert paused.json()["status"] == "paused"
    again = cp_client.post(f"/api/v1/rollouts/{rid}/pause", headers=operator)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    aborted = cp_client.post(
        f"/api/v1/rollouts/{rid}/abort", json={"reason": "x"}, headers=operator
    )
    assert aborted.json()["status"] == "aborted" and aborted.json()["reason"] == "x"
    assert cp_client.get("/api/v1/rollouts/ro-nope", headers=viewer).status_code == 404
    devices = cp_client.get(f"/api/v1/rollouts/{rid}/devices", headers=viewer)
    assert devices.status_code == 200


def test_unknown_model_is_refused(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    resp = cp_client.post("/api/v1/rollouts", json={"model": "nope:1"}, headers=admin_headers)
    assert resp.status_code == 404
    assert "not in the registry" in resp.json()["error"]["message"]
    resp = cp_client.post("/api/v1/rollouts", json={"model": "nope"}, headers=admin_headers)
    assert resp.status_code == 422


def test_dashboard_page_shows_waves(
    cp_client: TestClient, cp_settings: Settings, admin_headers: dict[str, str], admin_token: str
) -> None:
    seed(cp_settings)
    body = {"model": "tiny:2.0", "strategy": {"waves": [{"percent": 10}]}}
    rid = cp_client.post("/api/v1/rollouts", json=body, headers=admin_headers).json()["id"]
    cp_client.cookies.set(COOKIE, admin_token)
    page = cp_client.get("/rollouts")
    assert page.status_code == 200 and rid in page.text and "10%" in page.text
    detail = cp_client.get(f"/rollouts/{rid}")
    assert detail.status_code == 200 and "tiny:2.0" in detail.text
