"""The audit log: every mutating call of an operator recorded, listed to admins, append-only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from controlplane.db_models import Role
from tests.controlplane.helpers import bearer, enroll


def test_mutations_are_recorded_with_who_what_and_result(
    cp_client: TestClient, make_token: Callable[[Role], str]
) -> None:
    admin, viewer = bearer(make_token(Role.admin)), bearer(make_token(Role.viewer))
    device_id = enroll(cp_client, admin, labels={"site": "lab"})["device_id"]
    patch = {"labels": {"site": "shop"}}
    assert cp_client.patch(f"/api/v1/devices/{device_id}", json=patch, headers=admin).is_success
    assert (
        cp_client.patch(f"/api/v1/devices/{device_id}", json=patch, headers=viewer).status_code
        == 403
    )
    assert cp_client.post("/api/v1/rollouts/ro-nope/pause", headers=admin).status_code == 404
    cp_client.get("/api/v1/devices", headers=admin)  # reads are not recorded

    page = cp_client.get("/api/v1/audit", headers=admin).json()
    entries = page["items"]
    assert [e["action"] for e in entries] == [
        "pause_rollout",
        "update_device",
        "update_device",
        "create_enrollment_token",
    ]
    pause, refused, relabel, _token = entries
    assert pause["outcome"] == "refused" and pause["status"] == 404
    assert pause["target"] == "rollout_id=ro-nope" and pause["detail"]
    assert pause["route"] == "/api/v1/rollouts/{rollout_id}/pause"
    assert refused["actor"] == "test-viewer" and refused["role"] == "viewer"
    assert refused["outcome"] == "refused" and refused["detail"] == "forbidden"
    assert relabel["actor"] == "test-admin" and relabel["outcome"] == "ok"
    assert relabel["target"] == f"device_id={device_id}" and relabel["client"]
    assert cp_client.get("/api/v1/audit", headers=viewer).status_code == 403


def test_audit_pages_newest_first(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    for _ in range(5):
        cp_client.post("/api/v1/rollouts/ro-x/abort", headers=admin_headers)
    first = cp_client.get("/api/v1/audit?limit=2", headers=admin_headers).json()
    assert len(first["items"]) == 2 and first["next_before"] == first["items"][-1]["id"]
    seen = [e["id"] for e in first["items"]]
    before = first["next_before"]
    while before is not None:
        page = cp_client.get(f"/api/v1/audit?limit=2&before={before}", headers=admin_headers).json()
        seen += [e["id"] for e in page["items"]]
        before = page["next_before"]
    assert seen == sorted(seen, reverse=True) and len(seen) == 5
    only = cp_client.get(
        "/api/v1/audit?action=abort_rollout&target=ro-x", headers=admin_headers
    ).json()
    assert len(only["items"]) == 5


def test_the_log_refuses_edits(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    cp_client.post("/api/v1/rollouts/ro-x/abort", headers=admin_headers)
    engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    for statement in ("UPDATE audit_entry SET actor = 'someone-else'", "DELETE FROM audit_entry"):
        with Session(engine) as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
            session.commit()
    assert cp_client.delete("/api/v1/audit", headers=admin_headers).status_code == 405
