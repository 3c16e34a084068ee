"""Fixtures for end-to-end rollout tests: broker + control plane + agents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.fleet.mqtt
import controlplane.rollouts.controller as controller
from tests.e2e.fakes import publish_fake_model
from tests.e2e.harness import Fleet, admin_token, cp_settings, run_control_plane
from tests.support.mosquitto import MosquittoBroker


@pytest.fixture(autouse=True)
def fast_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller, "TICK_S", 0.2)
    monkeypatch.setattr(agent.fleet.mqtt, "RECONNECT_MAX_S", 1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path / "mqtt")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fleet(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Fleet]:
    settings = cp_settings(tmp_path / "cp", broker)
    token = admin_token(settings)
    with run_control_plane(settings) as url:
        f = Fleet(url, token, tmp_path)
        key = Ed25519PrivateKey.generate()
        f.import_model(publish_fake_model(tmp_path / "models", key, "1.0"))
        f.import_model(publish_fake_model(tmp_path / "models", key, "2.0"))
        f.import_model(publish_fake_model(tmp_path / "models", key, "3.0-bad", healthy=False))
        yield f
        f.stop()
