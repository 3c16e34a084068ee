"""Crash-safe file helpers: a symlink swapped in one rename, nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.files import atomic_symlink


def test_a_link_is_made_and_then_repointed(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    atomic_symlink(link, "v1")
    assert os.readlink(link) == "v1"
    atomic_symlink(link, Path("v2"))
    assert os.readlink(link) == "v2" and link.resolve() == (tmp_path / "v2").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1", "v2"]


def test_a_failed_swap_keeps_the_old_link_and_leaves_no_temporary(tmp_path: Path) -> None:
    link = tmp_path / "current"
    atomic_symlink(link, "v1")
    blocker = tmp_path / "dir"
    (blocker / "inside").mkdir(parents=True)  # a non-empty folder cannot be replaced by a link
    with pytest.raises(OSError):
        atomic_symlink(blocker, "v1")
    assert os.readlink(link) == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "dir"]
