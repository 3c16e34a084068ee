"""Operator auth: bearer tokens, roles, and the one error shape."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from controlplane.db_models import Role
from tests.controlplane.helpers import bearer


def assert_error(resp: object, status: int, code: str | None = None) -> None:
    """The response has `status` and the `{"error": {"code", "message"}}` shape."""
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def test_health_needs_no_token(cp_client: TestClient) -> None:
    resp = cp_client.get("/api/v1/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": True, "ingest": None, "problems": []}


def test_missing_and_bad_tokens_get_401_in_the_error_shape(cp_client: TestClient) -> None:
    resp = cp_client.get("/api/v1/devices")
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"
    assert_error(cp_client.get("/api/v1/devices", headers=bearer("efo_nope")), 401, "invalid_token")
    assert_error(cp_client.get("/api/v1/devices", headers={"Authorization": "Basic abc"}), 401)


def test_roles_gate_reads_and_writes(
    cp_client: TestClient, make_token: Callable[[Role], str]
) -> None:
    viewer, operator = bearer(make_token(Role.viewer)), bearer(make_token(Role.operator))
    assert cp_client.get("/api/v1/devices", headers=viewer).status_code == 200
    assert_error(
        cp_client.post("/api/v1/enrollment-tokens", json={}, headers=viewer), 403, "forbidden"
    )
    assert cp_client.post("/api/v1/enrollment-tokens", json={}, headers=operator).status_code == 201
    assert_error(
        cp_client.post("/api/v1/tokens", json={"name": "x"}, headers=operator), 403, "forbidden"
    )


def test_admin_creates_shows_once_and_revokes_tokens(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    resp = cp_client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "operator"}, headers=admin_headers
    )
    assert resp.status_code == 201
    created = resp.json()
    assert created["token"].startswith("efo_") and created["role"] == "operator"
    assert cp_client.get("/api/v1/me", headers=bearer(created["token"])).json()["name"] == "ci"
    listed = cp_client.get("/api/v1/tokens", headers=admin_headers).json()
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert cp_client.delete(f"/api/v1/tokens/{created['id']}", headers=admin_headers).is_success
    assert_error(cp_client.get("/api/v1/me", headers=bearer(created["token"])), 401)
    assert_error(cp_client.delete("/api/v1/tokens/9999", headers=admin_headers), 404)


def test_malformed_requests_get_4xx_in_the_error_shape(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    h = admin_headers
    assert_error(cp_client.post("/api/v1/tokens", content=b"{not json", headers=h), 422)
    assert_error(cp_client.post("/api/v1/tokens", json={"name": ""}, headers=h), 422)
    assert_error(
        cp_client.post("/api/v1/tokens", json={"name": "x", "role": "root"}, headers=h), 422
    )
    assert_error(cp_client.post("/api/v1/enroll", json=[1, 2]), 422, "validation_error")
    assert_error(
        cp_client.post("/api/v1/enrollment-tokens", json={"ttl_seconds": -1}, headers=h), 422
    )
    assert_error(
        cp_client.post("/api/v1/enrollment-tokens", json={"labels": {"bad key": "x"}}, headers=h),
        422,
    )
    assert_error(cp_client.get("/api/v1/devices?labels=novalue", headers=h), 422)
    assert_error(cp_client.get("/api/v1/devices?online=maybe", headers=h), 422)
    assert_error(cp_client.get("/api/v1/no-such-route"), 404, "not_found")
    assert_error(cp_client.put("/api/v1/health"), 405)


def test_unexpected_errors_are_500_in_the_error_shape(cp_app: FastAPI) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    cp_app.add_api_route("/api/v1/boom", boom)
    with TestClient(cp_app, raise_server_exceptions=False) as client:
        resp = client.get("/api/v1/boom")
    assert_error(resp, 500, "internal_error")
    assert "secret internals" not in resp.text and "Traceback" not in resp.text
