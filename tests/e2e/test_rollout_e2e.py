"""Rollouts end to end over a real Mosquitto: control plane, bridge, agents with FakeEngine."""

from __future__ import annotations

from tests.e2e.harness import Fleet
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until


def start(fleet: Fleet, n: int) -> list[str]:
    ids = [fleet.enroll({"site": "lab"}) for _ in range(n)]
    for d in ids:
        fleet.nodes[d].start()
    return ids


def state_of(fleet: Fleet, rollout_id: str, device_id: str) -> str | None:
    row = fleet.devices(rollout_id).get(device_id)
    return row["state"] if row else None


def finished(fleet: Fleet, rollout_id: str) -> bool:
    return fleet.show(rollout_id)["status"] not in ("scheduled", "running")


def test_rollout_reaches_every_device_in_waves(fleet: Fleet) -> None:
    ids = start(fleet, 3)
    rid = fleet.rollout("tiny:1.0", ["1", "100%"])
    wait_until(lambda: finished(fleet, rid), what="rollout to finish")
    shown = fleet.show(rid)
    assert shown["status"] == "succeeded", shown
    assert [w["devices"] for w in shown["waves"]] == [1, 2]
    assert all(fleet.serving(d) == "tiny:1.0" for d in ids)


def test_failing_canary_aborts_and_fleet_keeps_serving(fleet: Fleet) -> None:
    ids = start(fleet, 3)
    first = fleet.rollout("tiny:1.0", ["100%"])
    wait_until(lambda: finished(fleet, first), what="first rollout")
    rid = fleet.rollout("tiny:3.0-bad", ["1", "100%"], failure_threshold=0.1)
    wait_until(lambda: fleet.show(rid)["status"] == "aborted", what="abort")
    devices = fleet.devices(rid)
    (canary,) = [d for d, row in devices.items() if row["wave"] == 0]
    assert devices[canary]["state"] == "rolled_back"
    assert "health check failed" in devices[canary]["detail"]
    assert all(row["state"] == "canceled" for d, row in devices.items() if d != canary)
    assert all(fleet.serving(d) == "tiny:1.0" for d in ids)


def test_offline_device_catches_up_when_it_returns(fleet: Fleet) -> None:
    online = start(fleet, 1)
    offline = fleet.enroll({"site": "lab"})  # enrolled, never connected yet
    rid = fleet.rollout("tiny:1.0", ["100%"], device_timeout_s=600)
    wait_until(lambda: state_of(fleet, rid, online[0]) == "succeeded", what="online device")
    assert state_of(fleet, rid, offline) == "in_progress"
    fleet.nodes[offline].start()
    wait_until(lambda: finished(fleet, rid), what="offline device to catch up")
    assert fleet.show(rid)["status"] == "succeeded"
    assert fleet.serving(offline) == "tiny:1.0"


def test_broker_restart_mid_rollout_loses_nothing(fleet: Fleet, broker: MosquittoBroker) -> None:
    ids = start(fleet, 2)
    for d in ids:
        fleet.behaviours[d].load_delay_s = 1.5  # keep the rollout in flight across the restart
    rid = fleet.rollout("tiny:1.0", ["100%"])
    wait_until(
        lambda: (
            all(r["state"] == "in_progress" for r in fleet.devices(rid).values())
            and len(fleet.devices(rid)) == 2
        ),
        what="dispatch",
    )
    broker.restart()
    wait_until(lambda: finished(fleet, rid), "rollout after broker restart", timeout=60)
    assert fleet.show(rid)["status"] == "succeeded"
    assert all(fleet.serving(d) == "tiny:1.0" for d in ids)


def test_late_joiner_enters_running_rollout(fleet: Fleet) -> None:
    start(fleet, 1)
    rid = fleet.rollout("tiny:1.0", ["100%"], require_approval=False, device_timeout_s=600)
    fleet.http.post(f"/api/v1/rollouts/{rid}/pause")
    late = start(fleet, 1)[0]
    fleet.http.post(f"/api/v1/rollouts/{rid}/resume")
    wait_until(lambda: late in fleet.devices(rid) and finished(fleet, rid), what="late joiner")
    assert fleet.serving(late) == "tiny:1.0"


def test_operator_rollback_returns_devices_to_previous_model(fleet: Fleet) -> None:
    ids = start(fleet, 2)
    first = fleet.rollout("tiny:1.0", ["100%"])
    wait_until(lambda: finished(fleet, first), what="first rollout")
    second = fleet.rollout("tiny:2.0", ["100%"])
    wait_until(lambda: finished(fleet, second), what="second rollout")
    assert all(fleet.serving(d) == "tiny:2.0" for d in ids)
    resp = fleet.http.post(f"/api/v1/rollouts/{second}/rollback", json={"reason": "regression"})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: all(fleet.serving(d) == "tiny:1.0" for d in ids), what="rollback")
    assert fleet.show(second)["status"] == "rolled_back"
