"""Agent start-up: seconds from process start to ready, and idle memory (RSS).

Two cases: no model (ready = systemd READY=1, the REST API is listening) and the tiny
reference model (ready = /readyz answers 200). Readiness is observed through a real
NOTIFY_SOCKET datagram socket, the way systemd sees it.

    .venv/bin/python bench/agent_startup.py [--model PATH] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one_start(model: Path | None) -> tuple[float, float]:
    """(seconds to ready, RSS MiB once idle) of one `edgefleet-agent serve` process."""
    from agent.server.serve import free_port

    tmp = Path(tempfile.mkdtemp(prefix="ef-startup-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(120)
    port = free_port()
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp / "notify.sock"),
        "PYTHONPATH": str(REPO),
        "EDGEFLEET_AGENT_DATA_DIR": str(tmp / "data"),
    }
    cmd = [sys.executable, "-m", "agent.cli", "serve", "--port", str(port)]
    if model is not None:
        cmd += ["--model", str(model)]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        if model is not None:
            while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
                time.sleep(0.01)
        ready = time.perf_counter() - started
        time.sleep(1.0)  # let start-up garbage settle
        rss = psutil.Process(process.pid).memory_info().rss / 2**20
    finally:
        process.terminate()
        process.wait(timeout=30)
        notify.close()
    return ready, rss


def main() -> None:
    """Print start-up time and idle RSS with no model and with the tiny model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model to load (default: tiny reference)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = args.model
    if model is None:
        from models.reference import build_reference

        model = Path(tempfile.gettempdir()) / "edgefleet-bench-tiny"
        if not (model / "manifest.json").is_file():
            build_reference("tiny", model)
    for label, path in (("no model", None), (f"model {model.name}", model)):
        results = [one_start(path) for _ in range(args.runs)]
        ready = statistics.median(r[0] for r in results)
        rss = statistics.median(r[1] for r in results)
        print(f"{label:<24} ready in {ready:5.2f} s   idle RSS {rss:6.1f} MiB   ({args.runs} runs)")


if __name__ == "__main__":
    main()
