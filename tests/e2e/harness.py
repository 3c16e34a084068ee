"""A whole fleet on one machine: real Mosquitto, real control plane (uvicorn), real agents.

Agents are AgentNode instances (MQTT, outbox, slots, executor) in this process, with the
FakeEngine, so a rollout exercises everything but a real model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlmodel import Session

from agent.engines.fake import FakeBehaviour
from agent.fleet.daemon import AgentNode, NodeOptions
from agent.fleet.enroll import enroll
from agent.runtime import ModelRuntime
from controlplane import crud
from controlplane.core.config import Settings
from controlplane.core.db import make_engine, migrate
from controlplane.db_models import Role
from controlplane.main import create_app
from tests.e2e.fakes import fake_engines, pick_first
from tests.support.mosquitto import MosquittoBroker, free_port

HARDWARE = {"device_class": "cpu-x86", "cpu": {"arch": "x86_64", "cores": 2}}


@contextmanager
def run_control_plane(settings: Settings) -> Iterator[str]:
    """The control plane app under uvicorn (lifespan on) in a thread; yields its base URL."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="cp")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("control plane did not start")
        time.sleep(0.02)
    try:
        yield settings.public_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def cp_settings(workdir: Path, broker: MosquittoBroker, *, database_url: str = "") -> Settings:
    """Settings for a control plane (SQLite unless `database_url`) managing `broker`'s users."""
    port = free_port()
    return Settings(
        data_dir=workdir,
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_enabled=True,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        broker_password_file=broker.password_file,
        broker_acl_file=broker.acl_file,
        broker_pid=broker.pid,
        mqtt_cp_password="cp-secret",
        mqtt_cp_client_id=f"cp-{port}",
        database_url=database_url,
    )


def admin_token(settings: Settings) -> str:
    """A fresh admin API token's secret."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        _row, secret = crud.create_api_token(session, name="e2e", role=Role.admin)
    engine.dispose()
    return secret


class Fleet:
    """A control plane client plus agents it enrolled."""

    def __init__(self, url: str, token: str, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.nodes: dict[str, AgentNode] = {}
        self.behaviours: dict[str, FakeBehaviour] = {}

    def import_model(self, model_dir: Path) -> None:
        resp = self.http.post(
            "/api/v1/models/import", json={"path": str(model_dir), "resign": True}
        )
        assert resp.status_code == 201, resp.text

    def enroll(self, labels: dict[str, str] | None = None) -> str:
        resp = self.http.post("/api/v1/enrollment-tokens", json={"labels": labels or {}})
        assert resp.status_code == 201, resp.text
        data_dir = self.workdir / f"agent-{len(self.nodes)}"
        enrollment = enroll(
            self.url, resp.json()["token"], data_dir, hardware=HARDWARE, agent_version="e2e"
        )
        self.behaviours[enrollment.device_id] = FakeBehaviour()
        self.nodes[enrollment.device_id] = self._node(enrollment.device_id, data_dir)
        return enrollment.device_id

    def _node(self, device_id: str, data_dir: Path) -> AgentNode:
        from agent.fleet.enroll import load_enrollment

        enrollment = load_enrollment(data_dir)
        assert enrollment is not None
        options = NodeOptions(
            data_dir=data_dir,
            engine_factory=fake_engines(self.behaviours[device_id]),
            select=pick_first,
            hardware=HARDWARE,
            device_class="cpu-x86",
            telemetry_interval_s=0,
            check_memory=False,
        )
        return AgentNode(enrollment, ModelRuntime(), options)

    def restart(self, device_id: str) -> AgentNode:
        """A fresh AgentNode on the same data dir (as after a crash or reboot)."""
        old = self.nodes[device_id]
        node = self._node(device_id, old.options.data_dir)
        self.nodes[device_id] = node
        return node

    def rollout(self, model: str, waves: list[str], **strategy: Any) -> str:
        body = {"model": model, "strategy": {"waves": [_wave(w) for w in waves], **strategy}}
        resp = self.http.post("/api/v1/rollouts", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def show(self, rollout_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/v1/rollouts/{rollout_id}")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def devices(self, rollout_id: str) -> dict[str, dict[str, Any]]:
        resp = self.http.get(f"/api/v1/rollouts/{rollout_id}/devices")
        return {d["device_id"]: d for d in resp.json()}

    def serving(self, device_id: str) -> str | None:
        active = self.nodes[device_id].runtime.active
        return active.ref if active else None

    def stop(self) -> None:
        for node in self.nodes.values():
            try:
                node.stop()
            except Exception:  # already stopped in the test
                pass
        self.http.close()


def _wave(text: str) -> dict[str, float]:
    return {"percent": float(text[:-1])} if text.endswith("%") else {"count": int(text)}
