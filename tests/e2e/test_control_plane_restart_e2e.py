"""A control-plane restart at each step of a device's rollout: the rollout still completes.

The device is held at the step (dispatched: desired received, nothing reported; accepting:
`accepted` sent; downloading: the file download about to start), the control plane is
stopped, the device goes on against the dead control plane (its fetches are refused and
retried), and the control plane comes back a second later on the same port and database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.fleet.fetch_retry
from agent.fleet.rollout_events import EventSink
from models.protocol import RolloutEvent
from tests.controlplane.live import LiveServer
from tests.e2e.fakes import publish_fake_model
from tests.e2e.harness import Fleet, admin_token, cp_settings
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

OUTAGE_S = 1.0


class StepGate:
    """Holds the device's rollout at one step until the test lets it go on."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def wrap(self, send: EventSink) -> EventSink:
        """`send` (the node's own event sink), holding at the step."""

        def gated(event: RolloutEvent) -> None:
            before = self.step == "dispatched" and event.kind == "accepted"
            after = (self.step == "accepting" and event.kind == "accepted") or (
                self.step == "downloading" and event.kind == "downloading"
            )
            if before:
                self._hold()
            send(event)
            if after:
                self._hold()

        return gated

    def _hold(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.go_on.wait(30), "the test never let the rollout go on"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_S", 0.2)
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_MAX_S", 0.5)
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_RETRY_WINDOW_S", 60.0)


@pytest.fixture
def control_plane(tmp_path: Path, broker: MosquittoBroker) -> Iterator[LiveServer]:
    with LiveServer(cp_settings(tmp_path / "cp", broker)) as cp:
        yield cp


@pytest.mark.parametrize("step", ["dispatched", "accepting", "downloading"])
def test_rollout_completes_across_a_control_plane_restart(
    tmp_path: Path, broker: MosquittoBroker, control_plane: LiveServer, step: str
) -> None:
    settings = control_plane.settings
    fleet = Fleet(settings.public_url, admin_token(settings), tmp_path)
    try:
        fleet.import_model(
            publish_fake_model(tmp_path / "models", Ed25519PrivateKey.generate(), "1.0")
        )
        device = fleet.enroll({"site": "lab"})
        node = fleet.nodes[device]
        gate = StepGate(step)
        node.executor.deps.emit = gate.wrap(node.executor.deps.emit)
        node.start()
        rid = fleet.rollout("tiny:1.0", ["100%"])
        assert gate.reached.wait(30), f"the device never reached {step}"
        control_plane.stop(force=True)  # drop connections at once
        gate.go_on.set()  # the device carries on while the control plane is down
        time.sleep(OUTAGE_S)
        control_plane.start()
        wait_until(
            lambda: fleet.show(rid)["status"] not in ("scheduled", "running"),
            timeout=60,
            what=f"rollout after a restart while {step}",
        )
        shown = fleet.show(rid)
        assert shown["status"] == "succeeded", (shown, fleet.devices(rid))
        assert fleet.serving(device) == "tiny:1.0"
    finally:
        fleet.stop()
