"""The console shows which devices the ingest dropped messages from, and why."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.dashboard.routes import COOKIE
from controlplane.ingest_counters import save_counts
from controlplane.telemetry_models import IngestCounter
from models import protocol
from tests.controlplane.rollouts.conftest import add_device


def test_drops_show_on_the_overview_and_the_device_page(
    cp_client: TestClient, cp_settings: Settings, admin_token: str
) -> None:
    engine = make_engine(cp_settings.database_url)
    with Session(engine) as session:
        for device_id in ("dev-flood", "dev-skewed", "dev-old", "dev-fine"):
            add_device(session, device_id)
        session.commit()
    save_counts(
        engine,
        Counter(
            {
                ("dev-flood", "throttled"): 27_186,
                ("dev-flood", "invalid"): 3,
                ("dev-skewed", "future_samples"): 12,
                ("dev-old", "invalid"): 1,
            }
        ),
    )
    with Session(engine) as session:  # dev-old's drop was counted two days ago
        session.execute(
            update(IngestCounter)
            .where(IngestCounter.device_id == "dev-old")  # type: ignore[arg-type]
            .values(last_at=protocol.utcnow() - timedelta(days=2))
        )
        session.commit()
    engine.dispose()
    cp_client.cookies.set(COOKIE, admin_token)

    overview = cp_client.get("/").text
    listed = re.findall(r'<tr data-device-id="([^"]+)"', overview.split('id="dropping-devices"')[1])
    assert listed == ["dev-flood", "dev-skewed", "dev-flood"]  # highest count first
    assert "past the device&#39;s budget" in overview

    page = cp_client.get("/devices/dev-flood").text
    section = page.split('id="dropped-messages"')[1].split("</section>")[0]
    assert re.findall(r'data-reason="([^"]+)"', section) == ["throttled", "invalid"]
    assert "27186" in section
    assert 'id="dropped-messages"' not in cp_client.get("/devices/dev-fine").text
