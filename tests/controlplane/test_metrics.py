"""`GET /metrics`: Prometheus text that parses (and passes promtool), route templates as labels."""

from __future__ import annotations

import shutil
import subprocess

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.controlplane.helpers import enroll


def _families(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for lbl, v in samples if all(lbl.get(k) == x for k, x in labels.items()))


def test_metrics_report_fleet_requests_and_writes(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    enroll(cp_client, admin_headers, labels={"site": "lab"})
    device_id = enroll(cp_client, admin_headers)["device_id"]
    assert cp_client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin_headers).is_success
    assert cp_client.get("/api/v1/rollouts/ro-missing", headers=admin_headers).status_code == 404
    cp_client.get("/no/such/page/123")

    families = _families(cp_client)
    devices = families["edgefleet_cp_devices"]
    assert _value(devices, state="offline") == 1 and _value(devices, state="revoked") == 1
    assert _value(families["edgefleet_cp_devices_by_model"], model="none") == 1
    assert _value(families["edgefleet_cp_rollouts"], status="running") == 0
    assert families["edgefleet_cp_database_up"] == [({}, 1.0)]
    latency = families["edgefleet_cp_http_request_duration_seconds_count"]
    routes = {lbl["route"] for lbl, _v in latency}
    assert "/api/v1/rollouts/{rollout_id}" in routes  # the template, never the id
    assert "/api/v1/devices/{device_id}/revoke" in routes
    assert not any("ro-missing" in r or device_id in r or "123" in r for r in routes)
    assert "unmatched" in routes
    writes = families["edgefleet_cp_db_write_duration_seconds_count"]
    assert _value(writes, statement="insert") >= 2 and _value(writes, statement="update") >= 1


def test_metrics_pass_promtool(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        import pytest

        pytest.skip("promtool not installed: apt-get install -y prometheus")
    enroll(cp_client, admin_headers)
    text = cp_client.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
