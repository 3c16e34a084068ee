"""The MQTT ingest in a process of its own: bridge, database writer and rollout controller.

In one process, the bridge's threads (parsing thousands of messages a second, writing them)
hold Python's GIL most of the time, and every API request waits for it at each hop: measured
with bench/fleet_scale.py at 10,000 devices, the API's p99 was over a second during a
rollout. `edgefleet-cp serve` therefore runs the bridge, its writer, the recorders (rollout
events, command results) and the rollout controller in a child process. The API process keeps
an `IngestProcess` on `app.state.bridge` that answers what the API asks of the bridge
(`connected`, `stats`, `writer_status()`, `publish()` for device commands) from a status the
child sends every STATUS_INTERVAL_S and through a pipe.

Stopping: the API's lifespan asks the child to stop (it writes and acknowledges what is queued,
releases leadership), waits STOP_TIMEOUT_S, then terminates it. The child ignores SIGINT (a
Ctrl-C reaches the whole process group; the parent decides) and stops by itself when the
pipe closes (the parent died). A child that dies is started again after RESTART_DELAY_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from controlplane.core.config import Settings
from controlplane.errors import BridgeError
from controlplane.telemetry_ingest import WriterStatus

_LOGGER = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.5  # how stale the API's view of the bridge may be
PUBLISH_TIMEOUT_S = 10.0  # the child answers a publish at once unless it is stopping
STOP_TIMEOUT_S = 15.0  # the writer drains its queue (10 s at most) before the child exits
RESTART_DELAY_S = 1.0


class IngestProcess:
    """The API process's handle on the ingest child: the bridge's answers, from a distance."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.connected = threading.Event()
        self._stats: dict[str, int] = {}
        self._writer = WriterStatus(queued=0, lag_s=0.0, database_ok=True, last_write_at=None)
        self._replies: queue.Queue[str] = queue.Queue()
        self._publish_lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stopping = False

    @property
    def stats(self) -> dict[str, int]:
        """The bridge's counters as of its last status."""
        return dict(self._stats)

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def writer_status(self) -> WriterStatus:
        """The database writer's status as of the child's last report."""
        return self._writer

    def publish(self, topic: str, model: BaseModel, *, qos: int = 1, retain: bool = False) -> None:
        """Publish through the child's connection; BridgeError when it cannot go out."""
        with self._publish_lock:
            conn = self._conn
            if conn is None:
                raise BridgeError("the ingest process is not running")
            try:
                conn.send(("publish", topic, model.model_dump_json(), qos, retain))
                error = self._replies.get(timeout=PUBLISH_TIMEOUT_S)
            except (OSError, queue.Empty) as exc:
                raise BridgeError(f"the ingest process did not publish {topic}") from exc
        if error:
            raise BridgeError(error)

    def start(self) -> None:
        """Start the child and the thread that reads its status."""
        context = multiprocessing.get_context("spawn")  # no copied locks, threads or sockets
        ours, theirs = context.Pipe()
        process = context.Process(
            target=child_main, args=(self._settings, theirs), name="edgefleet-ingest"
        )
        process.start()
        theirs.close()
        self._conn, self._process = ours, process
        threading.Thread(target=self._read, args=(ours,), name="ingest-status", daemon=True).start()
        _LOGGER.info("ingest process started (pid %s)", process.pid)

    def stop(self) -> None:
        """Ask the child to finish (drain, acknowledge, disconnect); terminate it if it hangs."""
        self._stopping = True
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(("stop",))
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            _LOGGER.warning("ingest process did not stop in %ss; terminating it", STOP_TIMEOUT_S)
            process.terminate()
            process.join(5)
        conn.close()
        self._process = self._conn = None
        self.connected.clear()

    def exited(self) -> bool:
        """True when the child is gone while nobody asked it to stop."""
        return not self._stopping and self._process is not None and not self._process.is_alive()

    def restart(self) -> None:
        """Start a new child after the last one died."""
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None
        self.connected.clear()
        with self._publish_lock:  # a late answer of the dead child must not answer the next
            while not self._replies.empty():
                self._replies.get_nowait()
        self.start()

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self.connected.clear()
                return
            if message[0] == "status":
                _kind, connected, stats, writer = message
                self._stats, self._writer = stats, WriterStatus(**writer)
                if connected:
                    self.connected.set()
                else:
                    self.connected.clear()
            elif message[0] == "published":
                self._replies.put(message[1])


@asynccontextmanager
async def run_ingest_process(app: Any) -> AsyncIterator[IngestProcess]:
    """Lifespan service: the ingest child, its handle on `app.state.bridge`."""
    ingest = IngestProcess(app.state.settings)
    await asyncio.to_thread(ingest.start)
    app.state.bridge = ingest
    watch = asyncio.create_task(_restart_when_dead(ingest), name="ingest-watch")
    try:
        yield ingest
    finally:
        watch.cancel()
        app.state.bridge = None
        await asyncio.to_thread(ingest.stop)


async def _restart_when_dead(ingest: IngestProcess) -> None:
    while True:
        await asyncio.sleep(RESTART_DELAY_S)
        if ingest.exited():
            _LOGGER.error("ingest process exited; starting it again")
            await asyncio.to_thread(ingest.restart)


def child_main(settings: Settings, conn: Connection) -> None:
    """The child's entry point: run the services until the parent says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     [ingest] %(message)s")
    asyncio.run(_serve(settings, conn))


async def _serve(settings: Settings, conn: Connection) -> None:
    # Imported here: the API process never needs them.
    from controlplane.bridge import run_bridge
    from controlplane.commands import run_command_results
    from controlplane.core.db import make_engine
    from controlplane.rollouts.controller import run_rollouts

    engine = make_engine(settings.database_url)
    app = SimpleNamespace(state=SimpleNamespace(settings=settings, engine=engine))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sending = threading.Lock()  # status (this loop) and replies (the request thread) share it
    try:
        async with AsyncExitStack() as services:
            bridge = await services.enter_async_context(run_bridge(app))
            await services.enter_async_context(run_rollouts(app))
            await services.enter_async_context(run_command_results(app))
            threading.Thread(
                target=_serve_requests,
                args=(conn, sending, bridge, lambda: loop.call_soon_threadsafe(stop.set)),
                name="ingest-requests",
                daemon=True,
            ).start()
            while not stop.is_set():
                _send_status(conn, sending, bridge)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_S)
    finally:
        engine.dispose()


def _send_status(conn: Connection, sending: threading.Lock, bridge: Any) -> None:
    if bridge is None:
        return
    status = ("status", bridge.connected.is_set(), bridge.stats, asdict(bridge.writer_status()))
    with sending, contextlib.suppress(OSError):  # parent gone: the request thread stops us
        conn.send(status)


def _serve_requests(
    conn: Connection, sending: threading.Lock, bridge: Any, stop: Callable[[], object]
) -> None:
    """Publish what the API asks for; stop on request or when the parent goes away."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            stop()
            return
        if message[0] == "stop":
            stop()
            return
        if message[0] == "publish":
            _kind, topic, payload, qos, retain = message
            error = ""
            try:
                bridge.publish_raw(topic, payload, qos=qos, retain=retain)
            except BridgeError as exc:
                error = str(exc)
            with sending, contextlib.suppress(OSError):
                conn.send(("published", error))
