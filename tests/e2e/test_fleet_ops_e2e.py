"""Remote settings and remote logs end to end: real broker, control plane and agent."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import Fleet
from tests.support.polling import wait_until


def put_settings(fleet: Fleet, device: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = fleet.http.put(f"/api/v1/devices/{device}/settings", json=body)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_settings_apply_whole_or_not_at_all_and_are_reported(fleet: Fleet) -> None:
    device = fleet.enroll()
    node = fleet.nodes[device]
    node.start()
    assert node.mqtt.wait_connected(10)
    local = node.runtime.default_keep_alive
    put_settings(
        fleet,
        device,
        {"keep_alive_s": 30, "telemetry_interval_s": 5, "log_level": "debug", "parallel": 4},
    )
    wait_until(lambda: node.runtime.default_keep_alive == 30, "keep_alive applied")
    state = node.state()
    assert state.settings is not None and state.settings["telemetry_interval_s"] == 5
    assert state.settings["log_level"] == "debug" and state.settings_error == ""
    assert state.settings["parallel"] == 4 and "restart_required" not in state.settings

    def reported() -> dict[str, Any]:
        data: dict[str, Any] = fleet.http.get(f"/api/v1/devices/{device}/settings").json()
        return data

    wait_until(
        lambda: (reported().get("reported") or {}).get("keep_alive_s") == 30,
        timeout=30,
        what="the control plane shows what the device runs",
    )
    # This agent serves no REST API, so a key cannot be set: the whole config is refused.
    put_settings(fleet, device, {"keep_alive_s": 60, "api_key_sha256": "ab" * 32})
    wait_until(lambda: "api_key_sha256" in node.state().settings_error, "refusal reported")
    assert node.runtime.default_keep_alive == 30  # never half applied
    wait_until(lambda: "api_key_sha256" in reported()["reported_error"], "refusal shown")
    bad = fleet.http.put(f"/api/v1/devices/{device}/settings", json={"parallel": 1000})
    assert bad.status_code == 422  # out of bounds never leaves the control plane
    resp = fleet.http.delete(f"/api/v1/devices/{device}/settings")
    assert resp.status_code == 200 and resp.json()["settings"] is None
    wait_until(lambda: node.state().settings_error == "", "the fleet's settings dropped")
    wait_until(lambda: node.runtime.default_keep_alive == local, "local keep_alive back")


@pytest.fixture
def info_logs() -> Iterator[None]:
    """The agent logs at INFO, as `edgefleet-agent serve` does by default."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(before)


def test_logs_command_returns_recent_lines(fleet: Fleet, info_logs: None) -> None:
    device = fleet.enroll()
    node = fleet.nodes[device]
    node.start()
    assert node.mqtt.wait_connected(10)
    body = {"command": "logs", "args": {"since_s": 600, "level": "info", "max_bytes": 4096}}
    resp = fleet.http.post(f"/api/v1/devices/{device}/commands", json=body)
    assert resp.status_code in (201, 202), resp.text
    request_id = resp.json()["request_id"]
    answer: dict[str, Any] = {}

    def answered() -> bool:
        answer.update(fleet.http.get(f"/api/v1/commands/{request_id}").json())
        return answer.get("status") != "pending"

    wait_until(answered, "the logs answer")
    assert answer["status"] == "succeeded", answer
    lines = answer["result"]["lines"]
    assert lines and any("connected to" in line for line in lines)
    assert sum(len(line) for line in lines) <= 4096
