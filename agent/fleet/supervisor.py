"""A small supervisor that starts the current agent version and puts the previous one back.

    python -m agent.fleet.supervisor --root /var/lib/edgefleet/agent -- \\
        /opt/edgefleet/venv/bin/python -m agent serve --control-plane URL

systemd runs this as the service's main process (deploy/systemd/edgefleet-agent.service);
tests run it as a plain subprocess. It starts the command with the current version first on
PYTHONPATH (agent/fleet/install_layout.py). Exit code RESTART_EXIT from the agent means "I switched
the pointer, start me again". While a trial is open, the new version must write `trial-ok`
before the deadline; if it exits first (a crash loop included) or the deadline passes, the
supervisor kills it, points `current` back at the previous version, records why in
outcome.json and starts the previous version, which reports the rollback. Any other exit
outside a trial ends the supervisor with the agent's code, and systemd restarts the service.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from agent import systemd
from agent.fleet.install_layout import AgentInstall, Outcome, Trial

_LOGGER = logging.getLogger(__name__)

RESTART_EXIT = 75  # EX_TEMPFAIL: the agent asks to be started again (a new version is current)
POLL_S = 0.2  # how often the supervisor looks at its child and the trial files
STOP_TIMEOUT_S = 20.0  # SIGTERM, then SIGKILL after this long
ROOT_ENV = "EDGEFLEET_AGENT_ROOT"
PREVIOUS_EXIT_ENV = "EDGEFLEET_PREVIOUS_EXIT_AT"  # when the agent before this one exited
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Supervisor:
    """Runs one agent process at a time and judges trials."""

    def __init__(self, install: AgentInstall, command: Sequence[str]) -> None:
        self.install = install
        self.command = list(command)
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self._last_exit: float | None = None  # when the previous child ended (serving gap)

    def run(self) -> int:
        """Start, watch and restart the agent until stopped; the exit code for systemd."""
        while not self.stopping:
            code = self._run_once()
            if code is not None:
                return code
        return 0

    def stop(self, *_: object) -> None:
        """Stop the agent (SIGTERM) and then the supervisor."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **{ROOT_ENV: str(self.install.root)})
        env.pop("WATCHDOG_PID", None)  # systemd's watchdog is ours; the agent pings it for us
        if self._last_exit is not None:  # the agent reports its serving gap from this
            env[PREVIOUS_EXIT_ENV] = f"{self._last_exit:.3f}"
        first = self.install.python_path()
        if first is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (first, env.get("PYTHONPATH")) if p)
        _LOGGER.info("starting agent %s: %s", self.install.current(), " ".join(self.command))
        return subprocess.Popen(self.command, env=env)

    def _run_once(self) -> int | None:
        """One child from start to exit; None to start another, else the code to exit with."""
        trial = self.install.trial()
        child = self.child = self._spawn()
        while True:
            code = child.poll()
            if trial is not None and self.install.confirmed():
                self._passed(trial)
                trial = None
            if trial is not None and (
                code is not None or time.time() > trial.started_at + trial.deadline_s
            ):
                self._roll_back(trial, child, code)
                return None
            if code is None and trial is None:
                code = child.wait()  # nothing to judge: sleep until it exits (signals still work)
            if code is not None:
                self._last_exit = time.time()
                if self.stopping:
                    return 0
                if code == RESTART_EXIT:
                    _LOGGER.info(
                        "agent asked to be restarted (version %s is current)",
                        self.install.current(),
                    )
                    return None
                _LOGGER.error("agent exited with code %s; leaving it to systemd", code)
                return code
            if trial is not None:  # the new version may take a while to load: the trial's
                systemd.notify("WATCHDOG=1")  # deadline, not the watchdog, judges it
            time.sleep(POLL_S)

    def _passed(self, trial: Trial) -> None:
        now = time.time()
        gap = now - self._last_exit if self._last_exit is not None else None
        self.install.finish(
            Outcome(
                version=trial.version,
                outcome="active",
                detail=f"{trial.version} is healthy",
                desired_version=trial.desired_version,
                rollout_id=trial.rollout_id,
                switch_s=round(now - trial.started_at, 3),
                serving_gap_s=round(gap, 3) if gap is not None else None,
                reported=True,
            )
        )
        _LOGGER.info("agent %s passed its trial in %.1f s", trial.version, now - trial.started_at)

    def _roll_back(self, trial: Trial, child: subprocess.Popen[bytes], code: int | None) -> None:
        if code is None:
            why = f"{trial.version} was not healthy within {trial.deadline_s:g} s"
            _terminate(child)
        else:
            why = f"{trial.version} exited with code {code} before it was healthy"
        self._last_exit = time.time()
        _LOGGER.error("agent trial failed (%s); going back to %s", why, trial.previous)
        self.install.finish(
            Outcome(
                version=trial.version,
                outcome="rolled_back",
                detail=why,
                desired_version=trial.desired_version,
                rollout_id=trial.rollout_id,
                switch_s=round(time.time() - trial.started_at, 3),
            ),
            back_to=trial.previous,
        )


def _terminate(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.fleet.supervisor --root DIR -- COMMAND...`."""
    parser = argparse.ArgumentParser(
        prog="agent.fleet.supervisor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, required=True, help="the agent install root")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the agent command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the agent command after --")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    supervisor = Supervisor(AgentInstall(args.root), command)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
