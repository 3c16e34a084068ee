"""App start-up chores."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from controlplane.core.config import Settings
from controlplane.main import STALE_UPLOAD_S, _remove_stale_uploads, create_app


def _upload(root: Path, name: str, age_s: float) -> Path:
    work = root / "uploads" / name
    work.mkdir(parents=True)
    part = work / "model.gguf"
    part.write_bytes(b"GGUF")
    when = time.time() - age_s
    for path in (part, work):
        os.utime(path, (when, when))
    return work


def test_start_up_removes_cut_off_uploads_and_keeps_ones_in_flight(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/cp.db")
    cut_off = _upload(tmp_path, "old", STALE_UPLOAD_S + 60)
    in_flight = _upload(tmp_path, "new", 5)
    _remove_stale_uploads(settings)
    assert not cut_off.exists()
    assert (in_flight / "model.gguf").read_bytes() == b"GGUF"


def test_start_up_without_uploads_does_nothing(tmp_path: Path) -> None:
    _remove_stale_uploads(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/cp.db"))
    assert not (tmp_path / "uploads").exists()


def test_a_served_app_moves_its_start_up_objects_out_of_the_collectors_reach(
    tmp_path: Path,
) -> None:
    def frozen_after_start(serving: bool) -> int:
        app = create_app(
            Settings(
                data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/cp.db", mqtt_enabled=False
            )
        )
        if serving:
            app.state.freeze_heap_after_start = True  # what `edgefleet-cp serve` sets
        try:
            with TestClient(app):
                return gc.get_freeze_count()
        finally:
            gc.unfreeze()

    assert frozen_after_start(serving=False) == 0  # apps made in tests are left alone
    assert frozen_after_start(serving=True) > 0
