"""Enrollment: one-time, expiring tokens; credentials handed out once and stored hashed."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from controlplane import crud
from controlplane.broker_auth import verify_password
from controlplane.db_models import Device
from tests.controlplane.helpers import HARDWARE, bearer, enroll, enrollment_token, mark_device_state
from tests.controlplane.test_auth import assert_error


def test_enroll_returns_credentials_and_labels(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    result = enroll(cp_client, admin_headers, labels={"site": "lab"}, name="bench-1")
    device_id = result["device_id"]
    assert result["name"] == "bench-1" and result["labels"] == {"site": "lab"}
    mqtt = result["mqtt"]
    assert mqtt["username"] == device_id == mqtt["client_id"]
    assert mqtt["topic_prefix"] == f"ef/v1/devices/{device_id}"
    assert result["artifacts"]["base_url"] == "http://testserver/api/v1/artifacts"
    signing = cp_client.app.state.signing  # type: ignore[attr-defined]
    assert result["signing_public_key"] == signing.public_key
    assert result["trusted_public_keys"][0] == signing.public_key

    with Session(cp_client.app.state.engine) as session:  # type: ignore[attr-defined]
        device = session.exec(select(Device)).one()
    assert verify_password(mqtt["password"], device.mqtt_password_hash)
    assert mqtt["password"] not in device.mqtt_password_hash
    assert device.device_class == "cpu-x86" and device.hardware == HARDWARE
    passwd = cp_client.app.state.settings.broker_password_file.read_text()  # type: ignore[attr-defined]
    assert f"{device_id}:$7$" in passwd and "edgefleet-cp:$7$" in passwd


def test_enrollment_token_works_once(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    token = enrollment_token(cp_client, admin_headers)
    body = {"token": token, "hardware": {}, "agent_version": "0.1.0"}
    assert cp_client.post("/api/v1/enroll", json=body).status_code == 201
    assert_error(cp_client.post("/api/v1/enroll", json=body), 401, "invalid_enrollment_token")


def test_expired_and_unknown_tokens_are_refused(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        _row, secret = crud.create_enrollment_token(
            session, labels={}, ttl=timedelta(seconds=-1), created_by="test"
        )
    body = {"token": secret, "hardware": {}, "agent_version": "0.1.0"}
    assert_error(cp_client.post("/api/v1/enroll", json=body), 401, "invalid_enrollment_token")
    body["token"] = "eft_unknown"
    assert_error(cp_client.post("/api/v1/enroll", json=body), 401, "invalid_enrollment_token")
    listed = cp_client.get("/api/v1/enrollment-tokens", headers=admin_headers).json()
    assert [t["used_at"] for t in listed] == [None] and "token" not in listed[0]


def test_ttl_is_bounded(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    resp = cp_client.post(
        "/api/v1/enrollment-tokens", json={"ttl_seconds": 10**9}, headers=admin_headers
    )
    assert_error(resp, 422, "validation_error")


def test_devices_list_pages_in_enrollment_order(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    h = admin_headers
    enrolled = [enroll(cp_client, h, labels={"n": str(i)})["device_id"] for i in range(5)]

    def page(query: str) -> list[str]:
        resp = cp_client.get(f"/api/v1/devices{query}", headers=h)
        assert resp.status_code == 200, resp.text
        return [d["id"] for d in resp.json()]

    assert page("") == enrolled
    assert page("?limit=2") == enrolled[:2]
    assert page("?limit=2&offset=2") == enrolled[2:4]
    assert page("?limit=2&offset=4") == enrolled[4:]
    one = cp_client.get("/api/v1/devices?limit=1&offset=3", headers=h).json()[0]
    assert one == cp_client.get(f"/api/v1/devices/{enrolled[3]}", headers=h).json()
    assert one["labels"] == {"n": "3"}
    assert_error(cp_client.get("/api/v1/devices?limit=0", headers=h), 422, "validation_error")
    assert_error(cp_client.get("/api/v1/devices?limit=1001", headers=h), 422)
    assert_error(cp_client.get("/api/v1/devices?offset=-1", headers=h), 422)


def test_devices_list_filters_patch_revoke_delete(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    h = admin_headers
    a = enroll(cp_client, h, labels={"site": "lab", "tier": "canary"})["device_id"]
    b = enroll(cp_client, h, labels={"site": "lab"}, hardware={"device_class": "jetson"})
    c = enroll(cp_client, h, labels={"site": "home"})["device_id"]

    def ids(query: str) -> set[str]:
        resp = cp_client.get(f"/api/v1/devices{query}", headers=h)
        assert resp.status_code == 200, resp.text
        return {d["id"] for d in resp.json()}

    assert ids("") == {a, b["device_id"], c}
    assert ids("?labels=site=lab") == {a, b["device_id"]}
    assert ids("?labels=site=lab,tier=canary") == {a}
    assert ids("?device_class=jetson") == {b["device_id"]}
    assert ids("?online=true") == set()

    engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        from controlplane.db_models import utcnow

        state = {
            "online": True,
            "agent_version": "0.2.0",
            "active": {"name": "tiny", "version": "1.0.0", "variant": "x", "engine": "y"},
        }
        mark_device_state(session, device_id=c, online=True, state=state, seen_at=utcnow())
    assert ids("?online=true") == {c}
    assert ids("?model=tiny") == {c} == ids("?model=tiny:1.0.0")
    assert ids("?model=tiny:2.0.0") == set()
    got = cp_client.get(f"/api/v1/devices/{c}", headers=h).json()
    assert got["agent_version"] == "0.2.0" and got["last_seen"] is not None

    resp = cp_client.patch(f"/api/v1/devices/{a}", json={"labels": {"site": "home"}}, headers=h)
    assert resp.json()["labels"] == {"site": "home"}
    assert ids("?labels=site=home") == {a, c}

    revoked = cp_client.post(f"/api/v1/devices/{a}/revoke", headers=h).json()
    assert revoked["revoked"] is True
    passwd = cp_client.app.state.settings.broker_password_file.read_text()  # type: ignore[attr-defined]
    assert f"{a}:" not in passwd and f"{c}:" in passwd
    assert cp_client.delete(f"/api/v1/devices/{c}", headers=h).status_code == 204
    assert_error(cp_client.get(f"/api/v1/devices/{c}", headers=h), 404, "device_not_found")
    assert_error(cp_client.get("/api/v1/devices", headers=bearer(b["artifacts"]["token"])), 401)


def test_a_device_class_hwprobe_never_reports_is_refused(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    for body in ({"device_class": "x86-cpu"}, {"hardware": {"device_class": "jetson-orin"}}):
        token = enrollment_token(cp_client, admin_headers)
        resp = cp_client.post("/api/v1/enroll", json={"token": token, **body})
        assert resp.status_code == 422, resp.text
        assert "is not one hwprobe reports" in resp.json()["error"]["message"]
