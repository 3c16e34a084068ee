"""The sd_notify protocol, over real unix datagram sockets and a real agent process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent import systemd
from agent.server.serve import free_port
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    seen: list[str] = []
    while True:
        message = sock.recv(4096).decode()
        seen.append(message)
        if wanted in message.splitlines():
            return seen


def test_notify_sends_to_a_path_socket(notify_socket: socket.socket) -> None:
    assert systemd.ready("serving")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_sends_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgefleet-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert systemd.watchdog_interval() is None


def test_agent_process_notifies_ready_watchdog_and_stopping(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WATCHDOG_USEC": "400000",
        "HOME": str(tmp_path),
        "EDGEFLEET_AGENT_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = receive_until(notify_socket, "READY=1")
        assert any("STATUS=" in m for m in ready)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        receive_until(notify_socket, "WATCHDOG=1")
        process.send_signal(signal.SIGTERM)
        receive_until(notify_socket, "STOPPING=1")
        wait_until(lambda: process.poll() is not None, timeout=20)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
