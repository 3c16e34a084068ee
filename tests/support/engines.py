"""A real engine on the tiny reference model, for the engine tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.base import Engine, LoadOptions
from agent.engines.registry import create_engine, installed_engines
from agent.selection import variant_path
from models.manifest import Manifest


@contextlib.contextmanager
def reference_engine(
    model_dir: Path, name: str, variant_id: str, options: LoadOptions
) -> Iterator[Engine]:
    """Engine `name` with the model's `variant_id` loaded; skips when either is missing."""
    if name not in installed_engines():
        pytest.skip(f"{name} is not installed")
    manifest = Manifest.load(model_dir)
    if variant_id not in {v.id for v in manifest.variants}:
        pytest.skip(f"the reference model has no {variant_id}")
    engine = create_engine(name)
    engine.load(variant_path(model_dir, manifest.variant(variant_id)), options)
    try:
        yield engine
    finally:
        engine.unload()
