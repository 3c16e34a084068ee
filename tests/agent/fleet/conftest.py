"""Fleet-side fixtures: a real Mosquitto that knows the control plane and the test device, a
signing key and a rollout rig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.agent.fleet.nodes import CONTROL_PLANE_PASSWORD, DEVICE, DEVICE_PASSWORD, Rig
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the shipped config; users: the control plane and DEVICE."""
    running = MosquittoBroker(tmp_path / "mosquitto")
    running.set_users({CONTROL_PLANE_USER: CONTROL_PLANE_PASSWORD, DEVICE: DEVICE_PASSWORD})
    running.start()
    yield running
    running.stop()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The key models are signed with (and the device trusts)."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def rig(tmp_path: Path, key: Ed25519PrivateKey) -> Rig:
    """One device's rollout executor, everything on disk under tmp_path."""
    return Rig(tmp_path, key)
