"""Dashboard actions on the real app: roles as in the API, CSRF, validation, audit entries."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.dashboard import routes
from controlplane.dashboard.routes import COOKIE
from controlplane.dashboard.session import CSRF_COOKIE
from controlplane.db_models import Role
from tests.controlplane.rollouts.conftest import add_device, add_model


def seed(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        add_model(session, version="2.0")
        for i in range(3):
            add_device(session, f"dev-{i}", labels={"site": "a" if i < 2 else "b"})
    engine.dispose()


def sign_in(client: TestClient, token: str) -> str:
    """Keep the token cookie, open a page, and return the session's CSRF token."""
    client.cookies.clear()
    client.cookies.set(COOKIE, token)
    page = client.get("/rollouts")
    assert page.status_code == 200
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match and client.cookies.get(CSRF_COOKIE) == match.group(1)
    return match.group(1)


FORM = {
    "kind": "model",
    "model": "tiny:2.0",
    "labels": "site=a",
    "device_classes": "",
    "device_ids": "",
    "waves": "1,100%",
    "success_threshold": "1",
    "failure_threshold": "0.5",
    "device_timeout_s": "600",
    "soak_s": "0",
    "start_at": "",
    "require_approval": "1",
}


def test_rollout_form_validates_creates_and_acts(
    cp_client: TestClient, cp_settings: Settings, make_token: Callable[[Role], str]
) -> None:
    seed(cp_settings)
    csrf = sign_in(cp_client, make_token(Role.operator))
    preview = cp_client.get("/rollouts/preview?labels=site%3Da").json()
    assert preview["count"] == 2 and [d["id"] for d in preview["devices"]] == ["dev-0", "dev-1"]
    assert "error" in cp_client.get("/rollouts/preview?labels=bad%20label").json()

    no_csrf = cp_client.post("/rollouts/new", data=FORM, follow_redirects=False)
    assert no_csrf.status_code == 403 and "another site" in no_csrf.text
    wrong = cp_client.post("/rollouts/new", data={**FORM, "csrf": "x" * 43})
    assert wrong.status_code == 403

    bad = cp_client.post(
        "/rollouts/new",
        data={**FORM, "csrf": csrf, "waves": "ten", "failure_threshold": "2", "labels": "a b"},
    )
    assert bad.status_code == 422
    assert 'id="error-waves"' in bad.text and 'id="error-labels"' in bad.text
    missing = cp_client.post("/rollouts/new", data={**FORM, "csrf": csrf, "model": "nope:1"})
    assert missing.status_code == 422 and "not in the registry" in missing.text
    limits = cp_client.post("/rollouts/new", data={**FORM, "csrf": csrf, "failure_threshold": "2"})
    assert limits.status_code == 422 and 'id="error-failure_threshold"' in limits.text

    created = cp_client.post("/rollouts/new", data={**FORM, "csrf": csrf}, follow_redirects=False)
    assert created.status_code == 303, created.text
    rid = created.headers["location"].rsplit("/", 1)[-1]
    page = cp_client.get(f"/rollouts/{rid}")
    assert f"rollout {rid} created" in page.text and 'data-action="pause"' in page.text
    assert cp_client.post(f"/rollouts/{rid}/pause", data={"csrf": csrf}).status_code == 200
    page = cp_client.get(f"/rollouts/{rid}")
    assert "paused" in page.text and 'data-action="resume"' in page.text
    approve = cp_client.post(f"/rollouts/{rid}/approve", data={"csrf": csrf})
    assert "no wave waits for approval" in approve.text
    cp_client.post(f"/rollouts/{rid}/abort", data={"csrf": csrf})
    assert "aborted" in cp_client.get(f"/rollouts/{rid}").text
    again = cp_client.post(f"/rollouts/{rid}/pause", data={"csrf": csrf})
    assert "cannot pause a rollout that is aborted" in again.text

    admin = {"Authorization": f"Bearer {make_token(Role.admin)}"}
    entries = cp_client.get("/api/v1/audit", headers=admin).json()["items"]
    mine = [(e["action"], e["outcome"], e["source"]) for e in entries]
    assert ("create_rollout", "ok", "dashboard") in mine
    assert ("create_rollout", "refused", "dashboard") in mine  # the CSRF refusals
    assert any(
        e["target"] == f"rollout_id={rid}" and e["action"] == "create_rollout" for e in entries
    )


def test_viewer_sees_but_cannot_act(
    cp_client: TestClient, cp_settings: Settings, make_token: Callable[[Role], str]
) -> None:
    seed(cp_settings)
    csrf = sign_in(cp_client, make_token(Role.viewer))
    assert "New rollout" not in cp_client.get("/rollouts").text
    refused = cp_client.post("/devices/dev-0/revoke", data={"csrf": csrf})
    assert refused.status_code == 403 and "needs the operator role" in refused.text
    assert cp_client.get("/tokens").status_code == 403
    assert cp_client.get("/enroll").status_code == 403


def test_devices_enrollment_and_tokens(
    cp_client: TestClient, cp_settings: Settings, make_token: Callable[[Role], str]
) -> None:
    seed(cp_settings)
    csrf = sign_in(cp_client, make_token(Role.admin))
    bulk = {"csrf": csrf, "device_ids": ["dev-0", "dev-2"], "add": "ring=canary", "remove": "site"}
    assert "labels changed on 2 device(s)" in cp_client.post("/devices/labels", data=bulk).text
    page = cp_client.get("/devices?labels=ring%3Dcanary").text
    assert 'data-device-id="dev-0"' in page and 'data-device-id="dev-1"' not in page
    one = cp_client.post("/devices/dev-1/labels", data={"csrf": csrf, "labels": "site=z"})
    assert "site=z" in one.text
    assert "revoked" in cp_client.post("/devices/dev-1/revoke", data={"csrf": csrf}).text

    made = cp_client.post("/enroll", data={"csrf": csrf, "labels": "site=shop", "ttl": "24h"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    secret = re.search(r"EDGEFLEET_AGENT_ENROLLMENT_TOKEN=(\S+) edgefleet-agent serve", made.text)
    assert secret and secret.group(1) not in cp_client.get("/enroll").text  # shown once

    token = cp_client.post(
        "/tokens", data={"csrf": csrf, "name": "ci", "role": "operator", "days": "30"}
    )
    assert token.status_code == 200 and 'id="new-token"' in token.text
    token_id = re.findall(r'action="/tokens/(\d+)/revoke"', token.text)[-1]
    assert "revoked" in cp_client.post(f"/tokens/{token_id}/revoke", data={"csrf": csrf}).text
    imported = cp_client.post("/models/import", data={"csrf": csrf, "path": "/no/such/dir"})
    assert "not imported" in imported.text
    audit = cp_client.get("/audit").text
    for action in ("label_devices", "revoke_device", "create_enrollment_token", "create_token"):
        assert action in audit


def test_an_expired_token_goes_back_to_the_login_page(
    cp_client: TestClient, expired_token: str
) -> None:
    cp_client.cookies.set(COOKIE, expired_token)
    for path in ("/", "/rollouts/new", "/tokens"):
        page = cp_client.get(path, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"


def test_the_device_list_comes_in_pages(
    cp_client: TestClient,
    cp_settings: Settings,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(cp_settings)
    monkeypatch.setattr(routes, "DEVICES_PAGE", 2)
    cp_client.cookies.set(COOKIE, admin_token)
    first = cp_client.get("/devices").text
    assert first.count("data-device-id=") == 2 and 'id="next-page"' in first
    second = cp_client.get("/devices?page=1").text
    assert second.count("data-device-id=") == 1 and 'id="prev-page"' in second
    assert 'id="next-page"' not in second
