"""An enrolled agent process that can update itself, for the supervisor to run (FakeEngine).

    EDGEFLEET_AGENT_ROOT=ROOT python -m tests.e2e.update_agent_proc DATA_DIR

Exits with RESTART_EXIT when it switched to a new agent version.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from agent.fleet.daemon import AgentNode, NodeOptions
from agent.fleet.enroll import load_enrollment
from agent.fleet.supervisor import RESTART_EXIT, ROOT_ENV
from agent.runtime import ModelRuntime
from tests.e2e.fakes import fake_engines, pick_first
from tests.e2e.harness import HARDWARE


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    data_dir = Path(sys.argv[1])
    enrollment = load_enrollment(data_dir)
    assert enrollment is not None
    done, restart = threading.Event(), threading.Event()

    def request_restart() -> None:
        restart.set()
        done.set()

    options = NodeOptions(
        data_dir=data_dir,
        engine_factory=fake_engines(),
        select=pick_first,
        hardware=HARDWARE,
        device_class="cpu-x86",
        telemetry_interval_s=0,
        check_memory=False,
        agent_root=Path(os.environ[ROOT_ENV]),
        request_restart=request_restart,
    )
    node = AgentNode(enrollment, ModelRuntime(), options)
    node.start()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    node.stop()
    return RESTART_EXIT if restart.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
