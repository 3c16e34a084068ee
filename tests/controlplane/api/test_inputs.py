"""Hostile API inputs answer 4xx in the error shape, on SQLite and PostgreSQL, and database
errors never show their parameters."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from controlplane.core.db import make_engine, migrate
from tests.controlplane.helpers import HARDWARE, enroll, enrollment_token
from tests.controlplane.test_auth import assert_error

HUGE = "9223372036854775808"  # 2**63: one past the largest signed 64-bit integer


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/devices", {"offset": HUGE}),
        ("/api/v1/devices", {"limit": HUGE}),
        ("/api/v1/telemetry", {"bucket": HUGE}),
        ("/api/v1/telemetry", {"to": "0001-01-01T00:00:00Z"}),
        ("/api/v1/telemetry", {"from": "0001-01-01T00:00:00+05:00"}),
        ("/api/v1/telemetry", {"to": "9999-12-31T23:59:59-23:00"}),
        ("/api/v1/ingest/counters", {"limit": HUGE}),
    ],
)
def test_huge_numbers_and_far_dates_get_422(
    cp_client: TestClient, admin_headers: dict[str, str], path: str, params: dict[str, str]
) -> None:
    assert_error(cp_client.get(path, params=params, headers=admin_headers), 422, "validation_error")


def test_huge_path_and_body_numbers_get_422(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    assert_error(cp_client.delete(f"/api/v1/tokens/{HUGE}", headers=admin_headers), 422)
    resp = cp_client.post(
        "/api/v1/enrollment-tokens", json={"ttl_seconds": int(HUGE) ** 2}, headers=admin_headers
    )
    assert_error(resp, 422)


NUL_QUERIES = [
    ("/api/v1/devices", {"labels": "a=b\x00"}),
    ("/api/v1/devices", {"device_class": "x\x00"}),
    ("/api/v1/devices", {"model": "tiny\x00:1"}),
    ("/api/v1/telemetry", {"model": "\x00"}),
    ("/api/v1/telemetry", {"metric": "tokens_per_s\x00"}),
    ("/api/v1/rollouts", {"status": "running\x00"}),
]


@pytest.mark.parametrize(("path", "params"), NUL_QUERIES)
def test_nul_in_a_query_parameter_gets_422(
    cp_client: TestClient, admin_headers: dict[str, str], path: str, params: dict[str, str]
) -> None:
    assert_error(cp_client.get(path, params=params, headers=admin_headers), 422, "validation_error")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices/dev-%00",
        "/api/v1/models/tiny%00",
        "/api/v1/models/tiny/1%00",
        "/api/v1/rollouts/r%00",
        "/api/v1/commands/c%00",
        "/api/v1/devices/d%00/telemetry",
    ],
)
def test_nul_in_a_path_gets_422(
    cp_client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    assert_error(cp_client.get(path, headers=admin_headers), 422, "validation_error")


def test_nul_in_a_json_body_gets_422_and_an_escaped_backslash_does_not(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    token = enrollment_token(cp_client, admin_headers)
    body = {"token": token, "name": "shop\x00", "hardware": HARDWARE}
    assert_error(cp_client.post("/api/v1/enroll", json=body), 422, "validation_error")
    resp = cp_client.post("/api/v1/tokens", json={"name": "ci\x00"}, headers=admin_headers)
    assert_error(resp, 422)
    device = enroll(cp_client, admin_headers)["device_id"]
    resp = cp_client.patch(
        f"/api/v1/devices/{device}", json={"name": "a\\u0000b"}, headers=admin_headers
    )
    assert resp.status_code == 200 and resp.json()["name"] == "a\\u0000b"  # text, not a NUL


def test_times_in_answers_carry_their_offset(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    device = enroll(cp_client, admin_headers)["device_id"]
    shown = cp_client.get(f"/api/v1/devices/{device}", headers=admin_headers).json()
    assert shown["enrolled_at"].endswith(("Z", "+00:00")), shown["enrolled_at"]
    me = cp_client.get("/api/v1/me", headers=admin_headers).json()
    assert me["created_at"].endswith(("Z", "+00:00")), me


def test_openapi_documents_the_error_shape_for_422(cp_client: TestClient) -> None:
    doc = cp_client.get("/api/v1/openapi.json").json()
    responses = doc["paths"]["/api/v1/devices"]["get"]["responses"]
    assert "422" not in responses and responses["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_database_errors_never_show_their_parameters(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    secret = "f" * 64  # stands for an MQTT password or artifact token hash
    insert = text(
        "INSERT INTO api_token (id, name, role, token_hash, created_at) "
        "VALUES (:id, :name, 'viewer', :hash, CURRENT_TIMESTAMP)"
    )
    try:
        with pytest.raises((SQLAlchemyError, OverflowError)) as caught, engine.begin() as conn:
            conn.execute(insert, {"id": 2**70, "name": "a", "hash": secret})
    finally:
        engine.dispose()
    assert secret not in str(caught.value)


def test_oversized_json_bodies_and_hardware_are_refused(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    token = enrollment_token(cp_client, admin_headers)
    huge = {"token": token, "hardware": {"blob": "x" * (2 << 20)}}
    assert_error(cp_client.post("/api/v1/enroll", json=huge), 413, "too_large")
    big = {"token": token, "hardware": {"blob": "x" * (100 << 10)}}  # under the body cap
    assert_error(cp_client.post("/api/v1/enroll", json=big), 422, "validation_error")
    ok = cp_client.post("/api/v1/enroll", json={"token": token, "hardware": HARDWARE})
    assert ok.status_code == 201, ok.text  # the refused tries did not use the token up
