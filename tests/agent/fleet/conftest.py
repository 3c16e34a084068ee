"""Fleet-side fixtures: a real Mosquitto that knows the control plane and the test device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.fleet.nodes import CONTROL_PLANE_PASSWORD, DEVICE, DEVICE_PASSWORD
from tests.support.mosquitto import CONTROL_PLANE_USER, MosquittoBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the shipped config; users: the control plane and DEVICE."""
    running = MosquittoBroker(tmp_path / "mosquitto")
    running.set_users({CONTROL_PLANE_USER: CONTROL_PLANE_PASSWORD, DEVICE: DEVICE_PASSWORD})
    running.start()
    yield running
    running.stop()
