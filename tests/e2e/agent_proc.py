"""An enrolled agent as its own process (FakeEngine), so tests can kill -9 it.

python -m tests.e2e.agent_proc DATA_DIR [LOAD_DELAY_S]
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from agent.engines.fake import FakeBehaviour
from agent.fleet.daemon import AgentNode, NodeOptions
from agent.fleet.enroll import load_enrollment
from agent.runtime import ModelRuntime
from tests.e2e.fakes import fake_engines, pick_first
from tests.e2e.harness import HARDWARE


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    data_dir = Path(sys.argv[1])
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    enrollment = load_enrollment(data_dir)
    assert enrollment is not None
    options = NodeOptions(
        data_dir=data_dir,
        engine_factory=fake_engines(FakeBehaviour(load_delay_s=delay)),
        select=pick_first,
        hardware=HARDWARE,
        device_class="cpu-x86",
        telemetry_interval_s=0,
        check_memory=False,
    )
    node = AgentNode(enrollment, ModelRuntime(), options)
    node.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
