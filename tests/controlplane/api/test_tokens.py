"""Operator tokens expire and rotate."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.controlplane.helpers import bearer
from tests.controlplane.test_auth import assert_error


def test_new_tokens_expire_after_90_days_unless_told_otherwise(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    made = cp_client.post("/api/v1/tokens", json={"name": "ci"}, headers=admin_headers).json()
    created = made["created_at"]
    assert made["expires_at"] > created and made["expires_at"][:4] >= created[:4]
    never = cp_client.post(
        "/api/v1/tokens", json={"name": "robot", "expires_in_days": None}, headers=admin_headers
    ).json()
    assert never["expires_at"] is None
    assert cp_client.get("/api/v1/me", headers=bearer(never["token"])).status_code == 200
    resp = cp_client.post(
        "/api/v1/tokens", json={"name": "x", "expires_in_days": 0}, headers=admin_headers
    )
    assert_error(resp, 422)


def test_an_expired_token_gets_401_that_says_so(cp_client: TestClient, expired_token: str) -> None:
    resp = cp_client.get("/api/v1/me", headers=bearer(expired_token))
    assert_error(resp, 401, "token_expired")
    assert "expired" in resp.json()["error"]["message"]


def test_rotation_gives_a_new_secret_and_revokes_the_old(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    made = cp_client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "operator"}, headers=admin_headers
    ).json()
    rotated = cp_client.post(f"/api/v1/tokens/{made['id']}/rotate", headers=admin_headers)
    assert rotated.status_code == 201, rotated.text
    fresh = rotated.json()
    assert fresh["name"] == "ci" and fresh["role"] == "operator" and fresh["id"] != made["id"]
    assert_error(cp_client.get("/api/v1/me", headers=bearer(made["token"])), 401)
    mine = cp_client.post(
        "/api/v1/me/rotate", json={"expires_in_days": 7}, headers=bearer(fresh["token"])
    )
    assert mine.status_code == 201, mine.text
    assert_error(cp_client.get("/api/v1/me", headers=bearer(fresh["token"])), 401)
    assert cp_client.get("/api/v1/me", headers=bearer(mine.json()["token"])).status_code == 200
    resp = cp_client.post(f"/api/v1/tokens/{made['id']}/rotate", headers=admin_headers)
    assert_error(resp, 409, "token_revoked")
