"""The dashboard in a real headless Chromium against a real uvicorn control plane."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from controlplane import crud
from controlplane.db_models import Role
from controlplane.telemetry_store import insert_samples, sample_rows
from models import protocol
from tests.controlplane.dashboard.browser import chromium_page, needs_chromium
from tests.controlplane.helpers import HARDWARE, bearer, enroll, report_model
from tests.controlplane.live import sqlite_control_plane

pytestmark = needs_chromium


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running control plane with one online device that has an hour of telemetry."""
    with sqlite_control_plane(tmp_path, monkeypatch) as server:
        engine = server.engine
        with Session(engine) as session:
            _admin, admin = crud.create_api_token(session, name="admin", role=Role.admin)
            _viewer, viewer = crud.create_api_token(session, name="viewer", role=Role.viewer)
        with httpx.Client(base_url=server.url) as http:
            created = enroll(http, bearer(admin), labels={"site": "lab"}, name="kitchen")  # type: ignore[arg-type]
            device_id = created["device_id"]
        now = protocol.utcnow()
        with Session(engine) as session:
            report_model(
                session,
                device_id,
                "tiny:1.0.0",
                engine="llamacpp",
                variant="gguf-q4_0",
                agent_version="0.3.0",
                hardware=HARDWARE,
                seen_at=now,
            )
            samples = [
                protocol.TelemetrySample(
                    ts=now - timedelta(minutes=m),
                    tokens_per_s=30.0 + m,
                    ttft_ms=70.0,
                    cpu_percent=50.0,
                    temperature_c=55.0,
                )
                for m in range(0, 60, 2)
            ]
            batch = protocol.Telemetry(seq=1, samples=samples)
            insert_samples(session, sample_rows(device_id, batch))
            session.commit()
        yield {"url": server.url, "viewer": viewer, "device_id": device_id}


def test_dashboard_pages_in_chromium(seeded: dict[str, Any]) -> None:
    url, device_id = seeded["url"], seeded["device_id"]
    problems: list[str] = []
    with chromium_page(problems) as page:
        page.goto(f"{url}/devices")
        assert page.url.endswith("/login")  # no cookie yet
        page.fill("#token", "not-a-token")
        page.click("button[type=submit]")
        assert "unknown or revoked" in page.inner_text("#login-error")
        assert len(problems) == 1 and "401" in problems[0]  # the refused login itself
        problems.clear()

        page.fill("#token", seeded["viewer"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        assert page.inner_text("#total-devices") == "1"
        assert page.inner_text("#online-devices") == "1"
        assert page.locator("svg.line-chart path.series.avg").count() == 1

        page.goto(f"{url}/devices?labels=site%3Dlab&online=yes&model=tiny")
        row = page.locator(f"tr[data-device-id='{device_id}']")
        assert row.count() == 1 and "tiny:1.0.0" in row.inner_text()
        page.goto(f"{url}/devices?labels=site%3Delsewhere")
        assert page.locator(f"tr[data-device-id='{device_id}']").count() == 0

        page.goto(f"{url}/devices")
        page.click(f"a[href='/devices/{device_id}']")
        page.wait_for_url(f"{url}/devices/{device_id}")
        assert "llamacpp" in page.inner_text("#active-model")
        assert "x86_64, 2 cores" in page.inner_text("#hardware")
        charts = page.locator("svg.line-chart")
        assert charts.count() == 4
        # tokens/s has 30 samples: its line has many segments, not the empty-chart text.
        first = page.locator("svg.line-chart").first
        assert first.locator("text.empty").count() == 0
        line = first.locator("path.series.avg").get_attribute("d") or ""
        assert line.count("L") >= 10

        page.goto(f"{url}/models")
        assert page.locator("#model-table").count() == 1
    assert problems == []
