"""Fixtures for hwprobe tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """An empty folder used as a fake root."""
    root = tmp_path / "root"
    root.mkdir()
    return root
