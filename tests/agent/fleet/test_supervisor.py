"""The supervisor: a trial passes when the new version confirms, else the previous comes back."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import agent.fleet.supervisor as supervisor_module
from agent.fleet.install_layout import AgentInstall, Trial
from agent.fleet.supervisor import Supervisor
from tests.support.polling import wait_until

CONFIRM = (
    "import os, time; from pathlib import Path; from agent.fleet.install_layout import "
    "AgentInstall; AgentInstall(Path(os.environ['EDGEFLEET_AGENT_ROOT'])).confirm(); "
    "time.sleep(60)"
)
SLEEP = "import time; time.sleep(60)"


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "POLL_S", 0.02)


def install_with_trial(tmp_path: Path, deadline_s: float) -> AgentInstall:
    install = AgentInstall(tmp_path / "root")
    for version in ("1.0", "2.0"):
        install.version_dir(version).mkdir(parents=True)
    install.point(install.current_link, "1.0")
    install.start_trial(
        Trial(
            version="2.0",
            previous="1.0",
            deadline_s=deadline_s,
            started_at=time.time(),
            desired_version=7,
            rollout_id="ro-1",
        )
    )
    return install


def run_until(sup: Supervisor, done: Callable[[], bool]) -> None:
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    try:
        wait_until(done, timeout=20)
    finally:
        sup.stop()
        thread.join(timeout=20)


def test_a_confirmed_trial_keeps_the_new_version(tmp_path: Path) -> None:
    install = install_with_trial(tmp_path, deadline_s=60)
    sup = Supervisor(install, [sys.executable, "-c", CONFIRM])
    run_until(sup, lambda: install.outcome() is not None)
    outcome = install.outcome()
    assert outcome is not None and outcome.outcome == "active" and outcome.reported
    assert install.current() == "2.0" and install.trial() is None


def test_a_version_that_never_confirms_is_replaced_by_the_previous(tmp_path: Path) -> None:
    install = install_with_trial(tmp_path, deadline_s=0.5)
    sup = Supervisor(install, [sys.executable, "-c", SLEEP])
    run_until(sup, lambda: install.outcome() is not None)
    outcome = install.outcome()
    assert outcome is not None and outcome.outcome == "rolled_back"
    assert "not healthy within" in outcome.detail and not outcome.reported
    assert (outcome.desired_version, outcome.rollout_id) == (7, "ro-1")
    assert install.current() == "1.0"


def test_a_crash_on_start_rolls_back_at_once(tmp_path: Path) -> None:
    install = install_with_trial(tmp_path, deadline_s=60)
    sup = Supervisor(install, [sys.executable, "-c", "raise SystemExit(3)"])
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    wait_until(lambda: install.outcome() is not None, timeout=20)
    outcome = install.outcome()
    assert outcome is not None and "exited with code 3" in outcome.detail
    assert install.current() == "1.0"
    thread.join(timeout=20)  # the previous version crashes too: outside a trial, systemd's turn
    assert not thread.is_alive()
