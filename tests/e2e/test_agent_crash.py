"""kill -9 of an agent in the middle of a rollout leaves a serving model after restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.fleet.enroll import enroll
from agent.fleet.slots import SlotStore
from tests.e2e.harness import HARDWARE, Fleet
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]


def spawn(data_dir: Path, load_delay_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.agent_proc", str(data_dir), str(load_delay_s)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir / "agent.log").open("ab"),
    )


def active_model(fleet: Fleet, device_id: str) -> str | None:
    resp = fleet.http.get(f"/api/v1/devices/{device_id}")
    return resp.json().get("active_model") if resp.status_code == 200 else None


def test_kill_9_while_loading_keeps_the_committed_model(fleet: Fleet, tmp_path: Path) -> None:
    resp = fleet.http.post("/api/v1/enrollment-tokens", json={"labels": {}})
    data_dir = tmp_path / "proc-agent"
    device = enroll(
        fleet.url, resp.json()["token"], data_dir, hardware=HARDWARE, agent_version="e2e"
    ).device_id
    proc = spawn(data_dir, load_delay_s=3.0)
    try:
        first = fleet.rollout("tiny:1.0", ["100%"])
        wait_until(lambda: fleet.show(first)["status"] == "succeeded", "first rollout", timeout=60)
        second = fleet.rollout("tiny:2.0", ["100%"])
        wait_until(
            lambda: fleet.devices(second).get(device, {}).get("sub_status") == "loading",
            timeout=30,
            what="the agent to start loading 2.0",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        slot = SlotStore(data_dir / "slots").active()
        assert slot is not None and slot.version == "1.0"  # 2.0 was never committed
        proc = spawn(data_dir, load_delay_s=0.0)
        wait_until(
            lambda: fleet.show(second)["status"] == "succeeded", "rollout after restart", timeout=60
        )
        wait_until(lambda: active_model(fleet, device) == "tiny:2.0", "state shows 2.0")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
