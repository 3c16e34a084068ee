"""The demo stops every process it started (grandchildren too) on SIGTERM and on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]

DEMO = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, "scripts")
    import demo
    state = Path(sys.argv[1])
    d = demo.Demo(state)
    demo._stop_on_signals()
    try:
        d.spawn("sleeper", ["sh", "-c", f"sleep 300 & echo $! > {state}/grandchild; wait"])
        (state / "ready").write_text("1")
        time.sleep(300)
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_demo_stops_its_whole_process_tree(tmp_path: Path, signum: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", DEMO, str(tmp_path)], cwd=REPO)
    try:
        wait_until(
            lambda: (
                (tmp_path / "ready").exists()
                and (tmp_path / "grandchild").exists()
                and (tmp_path / "grandchild").read_text().strip() != ""
            ),
            timeout=30,
        )
        grandchild = int((tmp_path / "grandchild").read_text())
        assert alive(grandchild)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: not alive(grandchild), timeout=15)  # reaped by init once killed
    finally:
        if proc.poll() is None:
            proc.kill()
