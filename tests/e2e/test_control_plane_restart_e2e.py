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
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.fleet.fetch_retry
from agent.fleet.rollout_events import EventSink
from controlplane.core.config import Settings
from controlplane.main import create_app
from models.protocol import RolloutEvent
from tests.e2e.fakes import publish_fake_model
from tests.e2e.harness import Fleet, admin_token, cp_settings
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

OUTAGE_S = 1.0


class ControlPlane:
    """The control plane under uvicorn in a thread, stoppable and startable on one port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.settings),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, daemon=True, name="cp")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "cp did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = self._server.force_exit = True  # drop connections at once
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "cp did not stop"


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
def control_plane(tmp_path: Path, broker: MosquittoBroker) -> Iterator[ControlPlane]:
    cp = ControlPlane(cp_settings(tmp_path / "cp", broker))
    cp.start()
    yield cp
    try:
        cp.stop()
    except AssertionError:
        pass  # already stopped by a failing test


@pytest.mark.parametrize("step", ["dispatched", "accepting", "downloading"])
def test_rollout_completes_across_a_control_plane_restart(
    tmp_path: Path, broker: MosquittoBroker, control_plane: ControlPlane, step: str
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
        control_plane.stop()
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
