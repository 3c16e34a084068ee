"""A real control plane under uvicorn in a thread, for tests that talk to it over sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from controlplane import telemetry_retention
from controlplane.core.config import Settings
from controlplane.main import create_app
from tests.support.mosquitto import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class LiveServer:
    """The app built from `settings`, served on settings.host:settings.port; restartable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.url = f"http://{settings.host}:{settings.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def engine(self) -> Engine:
        """The app's database engine (set once the app has started)."""
        engine: Engine = self.app.state.engine
        return engine

    def start(self) -> None:
        """Serve (a fresh app after a stop) and wait until uvicorn has started."""
        if self._server is not None:
            self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = server = uvicorn.Server(config)
        self._thread = thread = threading.Thread(target=server.run, daemon=True, name="cp")
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("control plane server did not start")
            time.sleep(0.02)

    def stop(self, *, force: bool = False) -> None:
        """Shut down; `force` drops open connections at once."""
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._server.force_exit = force
        self._thread.join(timeout=STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError("control plane server did not stop")

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def sqlite_control_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A control plane on a fresh SQLite database, no broker; the retention job stays idle."""
    monkeypatch.setattr(telemetry_retention, "FIRST_RUN_DELAY_S", 3600.0)
    settings = Settings(
        data_dir=tmp_path / "cp",
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        mqtt_cp_password="pw",
        port=free_port(),
    )
    with LiveServer(settings) as server:
        yield server
