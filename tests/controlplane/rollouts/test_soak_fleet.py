"""Soak end to end: the fleet simulator serves a model that degrades only after activation.

A real broker, the control plane with its bridge and rollout controller, and simulated
devices that report telemetry; the model they switch to passes its install health check and
then runs slow (or fails requests). The canary's soak catches it and reverts it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from agent.fleetsim.device import Degradation
from agent.fleetsim.fleet import DeviceSpec, FleetSimulator, RolloutBehaviour
from controlplane.rollouts import controller
from models.protocol import ActiveModel
from tests.controlplane.helpers import enroll
from tests.controlplane.rollouts.conftest import add_model
from tests.support.polling import wait_until

WAIT_S = 60.0
OLD = ActiveModel(name="tiny", version="1.0", variant="gguf-q4_0", engine="fake")


@pytest.fixture
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller, "TICK_S", 0.1)


def rollout_json(client: TestClient, headers: dict[str, str], rid: str) -> dict[str, Any]:
    # The status first: once it is final, the devices read after it are final too.
    body = client.get(f"/api/v1/rollouts/{rid}", headers=headers).json()
    resp = client.get(f"/api/v1/rollouts/{rid}/devices", headers=headers)
    assert resp.status_code == 200, resp.text
    body["devices"] = resp.json()
    return dict(body)


@pytest.mark.parametrize(
    "degradation", [Degradation(speed=0.3), Degradation(error_rate=0.6)], ids=["slow", "erroring"]
)
def test_model_degrading_after_activation_is_reverted_by_the_soak(
    fast_ticks: None,
    fleet_client: TestClient,
    admin_headers: dict[str, str],
    degradation: Degradation,
) -> None:
    app: Any = fleet_client.app
    with Session(app.state.engine) as session:
        add_model(session, version="2.0")
    creds = [enroll(fleet_client, admin_headers, labels={"site": "soak"}) for _ in range(3)]
    specs = [DeviceSpec(c["device_id"], c["mqtt"]["password"], active=OLD) for c in creds]
    behaviour = RolloutBehaviour(download_s=(0.0, 0.05), degrade={"tiny:2.0": degradation})
    settings = app.state.settings
    strategy = {
        "waves": [{"count": 1}, {"percent": 100.0}],
        "soak_s": 600.0,
        "health": {"min_samples": 3, "baseline_s": 600.0},
    }

    async def run() -> dict[str, Any]:
        sim = FleetSimulator(
            specs, host=settings.mqtt_host, port=settings.mqtt_port, on_desired=behaviour
        )
        await sim.start(timeout_s=WAIT_S)
        telemetry = asyncio.ensure_future(sim.run_telemetry(interval_s=0.05))
        await asyncio.sleep(0.5)  # a baseline on the old model
        resp = fleet_client.post(
            "/api/v1/rollouts",
            headers=admin_headers,
            json={
                "model": "tiny:2.0",
                "selector": {"labels": {"site": "soak"}},
                "strategy": strategy,
            },
        )
        assert resp.status_code == 201, resp.text
        rid = resp.json()["id"]
        done = await asyncio.to_thread(
            wait_until,
            lambda: (
                (r := rollout_json(fleet_client, admin_headers, rid))["status"] == "aborted" and r
            ),
            "the soak fails the canary and the rollout aborts",
            WAIT_S,
        )
        dispatched = [d for d in done["devices"] if d["state"] != "canceled"]
        assert len(dispatched) == 1, done
        (canary,) = dispatched
        device = sim.devices[canary["device_id"]]
        await asyncio.to_thread(
            wait_until, lambda: device.active == OLD, "the canary serves its old model again"
        )
        telemetry.cancel()
        await sim.stop()
        return done

    done = asyncio.run(run())
    states = sorted(d["state"] for d in done["devices"])
    assert states == ["canceled", "canceled", "failed"]
    (canary,) = [d for d in done["devices"] if d["state"] == "failed"]
    assert canary["sub_status"] == "soak_failed" and canary["detail"].startswith("soak: ")
