"""The real-build cache key (tests/support/real_builds.py) changes with every input of a build."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import real_builds
from tests.support.real_builds import build_key


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A stand-in for the models package: two source files and a bytecode cache."""
    root = tmp_path / "models"
    (root / "build").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "build" / "pipeline.py").write_text("TARGETS = ('gguf-q4',)\n")
    return root


def test_the_key_follows_the_build_code(package: Path) -> None:
    before = build_key("smollm2", package=package)
    assert build_key("smollm2", package=package) == before
    (package / "build" / "pipeline.py").write_text("TARGETS = ('gguf-q8',)\n")
    assert build_key("smollm2", package=package) != before


def test_bytecode_does_not_change_the_key(package: Path) -> None:
    before = build_key("smollm2", package=package)
    (package / "build" / "__pycache__").mkdir()
    (package / "build" / "__pycache__" / "pipeline.cpython-311.pyc").write_bytes(b"\0")
    assert build_key("smollm2", package=package) == before


def test_the_key_follows_the_model_targets_and_converters(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = build_key("smollm2", package=package)
    assert build_key("gemma-3-270m", package=package) != before
    assert build_key("smollm2", ("gguf-q4",), package=package) != before
    monkeypatch.setattr(real_builds, "_version", lambda dist: f"{dist}-next")
    assert build_key("smollm2", package=package) != before
