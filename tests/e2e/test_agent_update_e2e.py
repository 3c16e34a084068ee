"""Agent self-update end to end: real broker, real control plane, agent processes under the
supervisor. Two releases built from this tree (1.1.0, 1.2.0) roll out and stay; a third
(1.3.0) crashes on start and the device puts 1.2.0 back by itself. The model the device
serves keeps serving after every switch.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fleet.enroll import enroll
from agent.fleet.install_layout import AgentInstall
from controlplane.agent_releases import import_release
from controlplane.signing_key import load_signing_identity
from models.agent_release import build_release
from models.keys import load_or_create_key
from tests.e2e.fakes import publish_fake_model
from tests.e2e.harness import HARDWARE, Fleet, admin_token, cp_settings, run_control_plane
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
CRASH = '__version__ = "1.3.0"\nraise SystemExit("1.3.0 crashes on start")\n'
WAIT_S = 90.0


@pytest.fixture
def cp(tmp_path: Path, broker: MosquittoBroker) -> Iterator[tuple[Fleet, Any]]:
    settings = cp_settings(tmp_path / "cp", broker)
    token = admin_token(settings)
    key = load_or_create_key(settings.signing_key_path)  # the fleet's key signs the releases
    signing = load_signing_identity(settings)
    for version, overrides in [
        ("1.1.0", None),
        ("1.2.0", None),
        ("1.3.0", {"agent/__init__.py": CRASH}),
    ]:
        out = tmp_path / "releases" / version
        build_release(REPO, out, version, key, overrides=overrides)
        import_release(settings, signing, out)
    with run_control_plane(settings) as url:
        fleet = Fleet(url, token, tmp_path)
        fleet.import_model(
            publish_fake_model(tmp_path / "models", Ed25519PrivateKey.generate(), "1.0")
        )
        yield fleet, settings
        fleet.stop()


def device_json(fleet: Fleet, device_id: str) -> dict[str, Any]:
    resp = fleet.http.get(f"/api/v1/devices/{device_id}")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def agent_rollout(fleet: Fleet, version: str) -> str:
    body = {"agent": version, "strategy": {"waves": [{"percent": 100.0}]}}
    resp = fleet.http.post("/api/v1/rollouts", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_agent_updates_twice_then_a_crashing_release_rolls_back_by_itself(
    cp: tuple[Fleet, Any], tmp_path: Path
) -> None:
    fleet, _settings = cp
    token = fleet.http.post("/api/v1/enrollment-tokens", json={"labels": {}}).json()["token"]
    data_dir = tmp_path / "device"
    device = enroll(fleet.url, token, data_dir, hardware=HARDWARE, agent_version="e2e").device_id
    root = tmp_path / "agent-root"
    install = AgentInstall(root)
    log = (tmp_path / "supervisor.log").open("ab")
    env = dict(os.environ, PYTHONPATH=str(REPO))  # the base install: this tree
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.fleet.supervisor",
            "--root",
            str(root),
            "--",
            sys.executable,
            "-m",
            "tests.e2e.update_agent_proc",
            str(data_dir),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
    )
    figures: list[str] = []
    try:
        model = fleet.rollout("tiny:1.0", ["100%"])
        wait_until(
            lambda: fleet.show(model)["status"] == "succeeded", "model rollout", timeout=WAIT_S
        )
        for version in ("1.1.0", "1.2.0"):
            rid = agent_rollout(fleet, version)
            wait_until(
                lambda rid=rid: fleet.show(rid)["status"] == "succeeded",
                timeout=WAIT_S,
                what=f"agent rollout to {version}",
            )
            wait_until(
                lambda v=version: device_json(fleet, device).get("agent_version") == v,
                timeout=WAIT_S,
                what=f"the device reports {version}",
            )
            assert install.current() == version
            (row,) = fleet.devices(rid).values()
            assert "serving gap" in row["detail"], row  # reported to the control plane
            wait_until(
                lambda: device_json(fleet, device).get("active_model") == "tiny:1.0",
                timeout=WAIT_S,
                what="the model serves again after the switch",
            )
            # the supervisor writes the outcome at its next poll after the new version confirmed,
            # which may come after the device's report reached the control plane
            wait_until(
                lambda v=version: getattr(install.outcome(), "version", None) == v,
                timeout=WAIT_S,
                what=f"the supervisor records how the switch to {version} ended",
            )
            outcome = install.outcome()
            assert outcome is not None and outcome.outcome == "active"
            figures.append(
                f"{version}: switch {outcome.switch_s} s, serving gap {outcome.serving_gap_s} s"
            )
        assert sorted(p.name for p in install.versions.iterdir()) == ["1.1.0", "1.2.0"]
        bad = agent_rollout(fleet, "1.3.0")
        wait_until(
            lambda: fleet.show(bad)["status"] == "aborted",
            timeout=WAIT_S,
            what="the crashing release is rolled back and the rollout aborts",
        )
        (row,) = fleet.devices(bad).values()
        assert row["state"] == "rolled_back" and "exited with code" in row["detail"], row
        assert install.current() == "1.2.0"
        outcome = install.outcome()
        assert outcome is not None and outcome.outcome == "rolled_back"
        figures.append(f"1.3.0: rolled back after {outcome.switch_s} s")
        wait_until(
            lambda: device_json(fleet, device).get("agent_version") == "1.2.0",
            timeout=WAIT_S,
            what="the device reports 1.2.0 again",
        )
        wait_until(
            lambda: device_json(fleet, device).get("active_model") == "tiny:1.0",
            timeout=WAIT_S,
            what="the model serves after the rollback",
        )
        assert supervisor.poll() is None  # never bricked: the supervisor still runs it
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)
        log.close()
        # update time per device and serving gap, for the notes (pytest -s, or the log)
        logging.getLogger(__name__).warning("agent update figures: %s", "; ".join(figures))
    assert json.loads((root / "outcome.json").read_text())["version"] == "1.3.0"
