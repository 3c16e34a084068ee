"""`/enroll` is rate limited per client address."""

from __future__ import annotations

from fastapi.testclient import TestClient

from controlplane.api import rate_limit
from tests.controlplane.test_auth import assert_error


def test_enroll_past_the_burst_gets_429_with_retry_after(cp_client: TestClient) -> None:
    body = {"token": "eft_wrong", "hardware": {}}
    for _ in range(rate_limit.ENROLL_BURST):
        assert_error(cp_client.post("/api/v1/enroll", json=body), 401)
    resp = cp_client.post("/api/v1/enroll", json=body)
    assert_error(resp, 429, "too_many_requests")
    assert int(resp.headers["retry-after"]) >= 1
