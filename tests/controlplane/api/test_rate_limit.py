"""`/enroll` is rate limited per client address."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controlplane.api import rate_limit
from controlplane.api.rate_limit import TokenBucketLimiter
from tests.controlplane.test_auth import assert_error


def test_bucket_allows_a_burst_then_refills() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(burst=3, per_minute=60.0, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0.0  # another client has its own bucket
    now[0] = 1.0
    assert limiter.take("a") == 0.0


def test_buckets_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_CLIENTS", 10)
    limiter = TokenBucketLimiter(burst=1, per_minute=1.0, clock=lambda: 0.0)
    for i in range(100):
        limiter.take(f"10.0.0.{i}")
    assert len(limiter._buckets) <= 10


def test_enroll_past_the_burst_gets_429_with_retry_after(cp_client: TestClient) -> None:
    body = {"token": "eft_wrong", "hardware": {}}
    for _ in range(rate_limit.ENROLL_BURST):
        assert_error(cp_client.post("/api/v1/enroll", json=body), 401)
    resp = cp_client.post("/api/v1/enroll", json=body)
    assert_error(resp, 429, "too_many_requests")
    assert int(resp.headers["retry-after"]) >= 1
