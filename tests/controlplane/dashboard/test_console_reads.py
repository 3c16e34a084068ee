"""The console's reads at fleet scale: a rollout's device rows a page at a time, and the fleet
charts' metrics in one pass, with the same answers as before."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.dashboard.routes import COOKIE
from controlplane.rollouts import dashboard
from controlplane.rollouts.models import RolloutDevice
from controlplane.telemetry_reads import grouped_metrics, grouped_series
from controlplane.telemetry_store import insert_samples, roll_up, sample_rows
from models import protocol
from tests.controlplane.rollouts.conftest import add_device, add_model


def test_rollout_page_lists_devices_a_page_at_a_time(
    cp_client: TestClient,
    cp_settings: Settings,
    admin_token: str,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(cp_settings.database_url)
    with Session(engine) as session:
        add_model(session, version="2.0")
        for i in range(5):
            add_device(session, f"dev-{i}", labels={"site": "a"})
    body = {"model": "tiny:2.0", "selector": {"labels": {"site": "a"}}}
    created = cp_client.post("/api/v1/rollouts", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    waves = {"dev-0": 1, "dev-1": 0, "dev-2": 1, "dev-3": 0, "dev-4": 2}
    with Session(engine) as session:  # the rows the controller would add as waves start
        for device_id, wave in waves.items():
            session.add(RolloutDevice(rollout_id=rid, device_id=device_id, wave=wave))
        session.commit()
    engine.dispose()
    in_order = ["dev-1", "dev-3", "dev-0", "dev-2", "dev-4"]  # by wave, then id

    monkeypatch.setattr(dashboard, "DEVICE_ROWS", 2)
    cp_client.cookies.set(COOKIE, admin_token)
    seen: list[str] = []
    path = f"/rollouts/{rid}"
    for _ in range(5):
        page = cp_client.get(path)
        assert page.status_code == 200
        rows = re.findall(r'<tr data-device-id="([^"]+)"', page.text)
        assert 1 <= len(rows) <= 2
        seen += rows
        following = re.search(r'href="([^"]+)" id="next-devices"', page.text)
        if following is None:
            break
        path = following.group(1).replace("&amp;", "&")
    assert seen == in_order
    assert "first page" in page.text
    # a key that is not WAVE:ID shows the first page
    first = cp_client.get(f"/rollouts/{rid}?after=nonsense").text
    assert re.findall(r'<tr data-device-id="([^"]+)"', first) == in_order[:2]


def test_grouped_metrics_answers_as_grouped_series(cp_settings: Settings) -> None:
    now = protocol.utcnow()
    engine = make_engine(cp_settings.database_url)
    with Session(engine) as session:
        for device_id, model in (("a", "tiny:1"), ("b", "tiny:1"), ("c", "big:2")):
            add_device(session, device_id, active=model, device_class=f"class-{device_id}")
            samples = [
                protocol.TelemetrySample(
                    ts=now - timedelta(minutes=minutes),
                    tokens_per_s=10.0 + minutes if device_id != "b" else None,
                    ttft_ms=100.0 * (minutes + 1),
                    requests=3,
                    errors=1 if device_id == "c" else 0,
                )
                for minutes in (1, 2, 30, 180)
            ]
            insert_samples(
                session, sample_rows(device_id, protocol.Telemetry(seq=1, samples=samples))
            )
        session.commit()
        roll_up(session, now=now, keep=timedelta(hours=1))  # the 3-hour-old ones: hourly rows
        session.commit()
        metrics = ("tokens_per_s", "ttft_ms", "requests", "errors")
        start, bucket_s = now - timedelta(hours=6), 600
        columns: tuple[Literal["active_model", "device_class"], ...] = (
            "active_model",
            "device_class",
        )
        for column in columns:
            together = grouped_metrics(
                session, metrics=metrics, group_by=column, start=start, end=now, bucket_s=bucket_s
            )
            for metric in metrics:
                alone = grouped_series(
                    session, metric=metric, group_by=column, start=start, end=now, bucket_s=bucket_s
                )
                assert together[metric] == alone
        by_model = grouped_metrics(
            session,
            metrics=metrics,
            group_by="active_model",
            start=start,
            end=now,
            bucket_s=bucket_s,
        )
    engine.dispose()
    assert set(by_model["tokens_per_s"]) == {"tiny:1", "big:2"}
    # b reports no tokens/s: tiny:1's tokens/s come from a alone, its requests from a and b
    assert sum(p.count for p in by_model["tokens_per_s"]["tiny:1"]) == 4
    assert sum(p.sum or 0 for p in by_model["requests"]["tiny:1"]) == 24
