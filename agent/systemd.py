"""systemd's notify protocol (sd_notify) spoken directly over $NOTIFY_SOCKET: no dependency."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

_LOGGER = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    # "@name" is a Linux abstract socket: the name starts with a NUL byte.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run under systemd or it failed."""
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(state.encode())
    except OSError as exc:
        _LOGGER.warning("could not notify systemd at %s: %s", raw, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd the service is up (Type=notify), with an optional status line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping(status: str | None = None) -> bool:
    """Tell systemd the service is shutting down."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    """Set the one-line status `systemctl status` shows."""
    return notify(f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def watchdog_loop(interval: float) -> None:
    """Ping the watchdog every `interval` seconds while the event loop is alive."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
