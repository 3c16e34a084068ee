"""The data behind the pictures: fleet lines per model and per class, a device's history."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.dashboard.routes import COOKIE
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.telemetry_store import insert_samples, sample_rows
from models import protocol
from tests.controlplane.helpers import sql_statements
from tests.controlplane.rollouts.conftest import add_device


def _embedded(html: str, prefix: str) -> list[Any]:
    found = re.findall(
        rf'<script type="application/json" id="{prefix}[^"]*">(.*?)</script>', html, re.S
    )
    return [json.loads(chunk) for chunk in found]


def test_fleet_lines_and_model_history(
    cp_client: TestClient, cp_settings: Settings, admin_token: str
) -> None:
    now = protocol.utcnow()
    engine = make_engine(cp_settings.database_url)
    with Session(engine) as session:
        add_device(session, "dev-a", device_class="jetson", active="tiny:1.0")
        add_device(session, "dev-b", device_class="x86", active="big:2.0")
        for device_id, tps in (("dev-a", 40.0), ("dev-b", 10.0)):
            samples = [
                protocol.TelemetrySample(
                    ts=now - timedelta(minutes=m),
                    tokens_per_s=tps,
                    ttft_ms=100.0,
                    requests=10,
                    errors=m % 2,
                )
                for m in range(1, 30, 5)
            ]
            insert_samples(
                session, sample_rows(device_id, protocol.Telemetry(seq=1, samples=samples))
            )
        session.add(
            Rollout(
                id="ro-1",
                model_name="tiny",
                model_version="1.0",
                manifest_url="x",
                status="succeeded",
            )
        )
        session.flush()
        session.add(
            RolloutDevice(
                rollout_id="ro-1",
                device_id="dev-a",
                state="succeeded",
                dispatched_at=now - timedelta(hours=2),
                updated_at=now - timedelta(hours=1),
            )
        )
        session.commit()
    engine.dispose()
    cp_client.cookies.set(COOKIE, admin_token)

    charts = _embedded(cp_client.get("/fleet?range=1h").text, "fleet-")
    assert [c["metric"] for c in charts] == [
        "tokens/s (avg per device)",
        "TTFT ms (avg)",
        "errors per request",
    ]
    lines = {s["name"]: s["points"] for s in charts[0]["series"]}
    assert set(lines) == {"tiny:1.0 (1)", "big:2.0 (1)"}
    assert {p["avg"] for p in lines["tiny:1.0 (1)"]} == {40.0}
    errors = charts[2]["series"][0]["points"]
    assert all(0 <= p["avg"] <= 0.1 for p in errors) and errors
    app_engine = cp_client.app.state.engine  # type: ignore[attr-defined]
    with sql_statements(app_engine) as seen:
        by_class = _embedded(cp_client.get("/fleet?by=class").text, "fleet-")
    assert {s["name"] for s in by_class[0]["series"]} == {"jetson (1)", "x86 (1)"}
    # whole minutes up to the end of the current one: telemetry_minute alone answers
    assert seen and not [sql for sql in seen if "telemetry_sample" in sql]

    (history,) = _embedded(cp_client.get("/devices/dev-a").text, "history-json")
    assert [(i["model"], i["state"]) for i in history["items"]] == [("tiny:1.0", "succeeded")]
