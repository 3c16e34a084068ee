"""Running the app under uvicorn: as the service (with systemd notify) or in a thread (tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI

from agent import systemd
from agent.runtime import ModelRuntime

_LOGGER = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 30.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )


class AgentServer(uvicorn.Server):
    """uvicorn that tells systemd STOPPING=1 on SIGTERM and exits 0 after a clean shutdown."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: notify systemd, then let uvicorn drain connections."""
        if not self.should_exit:
            systemd.stopping("shutting down")
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM; unlike uvicorn, do not re-raise them after shutdown."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass
class RunningServer:
    """A uvicorn server started by serve_in_thread."""

    server: uvicorn.Server
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:12345."""
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningServer]:
    """Run a real uvicorn server in a background thread until the block exits."""
    server = uvicorn.Server(_config(app, host, port or free_port(host), "warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{server.config.port}")
        time.sleep(0.01)
    try:
        yield RunningServer(server, host, server.config.port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def serve(
    app: FastAPI,
    runtime: ModelRuntime,
    *,
    host: str,
    port: int,
    load: Callable[[], Awaitable[object]] | None = None,
    log_level: str = "info",
) -> None:
    """Serve until SIGTERM/SIGINT: READY=1 once listening, the model loads in the background."""
    server = AgentServer(_config(app, host, port, log_level))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # bind failure and the like: raise it
            return
        await asyncio.sleep(0.01)
    _LOGGER.info("listening on http://%s:%d", host, port)
    systemd.ready("loading model" if load else "serving, no model loaded")
    background: list[asyncio.Task[object]] = []
    interval = systemd.watchdog_interval()
    if interval:
        background.append(asyncio.create_task(systemd.watchdog_loop(interval)))
    if load is not None:
        background.append(asyncio.create_task(_load_and_report(load, runtime)))
    try:
        await serving
    finally:
        for task in background:
            task.cancel()
        runtime.unload()


async def _load_and_report(load: Callable[[], Awaitable[object]], runtime: ModelRuntime) -> object:
    try:
        result = await load()
    except Exception as exc:  # the server keeps answering; /readyz says it has no model
        _LOGGER.error("model load failed: %s", exc)
        systemd.status(f"model load failed: {exc}")
        return None
    active = runtime.active
    if active is not None:
        systemd.status(f"serving {active.ref} ({active.variant_id} on {active.engine_name})")
    return result
