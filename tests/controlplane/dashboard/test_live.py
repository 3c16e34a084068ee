"""Live streams: one event per change at most per interval, diffs merged for slow readers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.core.db import make_engine
from controlplane.dashboard import live
from controlplane.dashboard.routes import COOKIE
from controlplane.telemetry_store import insert_samples, sample_rows
from controlplane.telemetry_summary import fleet_summary
from models import protocol
from tests.controlplane.helpers import enroll, mark_device_state
from tests.controlplane.rollouts.conftest import add_device


def _events(client: TestClient, path: str) -> list[dict[str, object]]:
    out = []
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_fleet_stream_sends_only_changes(
    cp_client: TestClient,
    admin_headers: dict[str, str],
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(live.INTERVAL_S, "fleet", 0.05)
    monkeypatch.setattr(live, "STREAM_MAX_S", 0.6)
    enroll(cp_client, admin_headers)
    no_cookie = cp_client.get("/live/fleet", follow_redirects=False)
    assert no_cookie.status_code == 303  # the login page
    cp_client.cookies.set(COOKIE, admin_token)
    events = _events(cp_client, "/live/fleet")
    # about 12 polls, one snapshot: nothing changed after the first
    assert events == [{"total": 1, "online": 0, "by_health": {"offline": 1}}]
    assert cp_client.get("/live/rollout").status_code == 404  # needs ?id=
    assert _events(cp_client, "/live/rollout?id=ro-none") == [{"missing": True}]


def test_a_slow_reader_gets_one_merged_diff() -> None:
    async def scenario() -> dict[str, object] | None:
        sub = live.Subscriber(merge=True)
        sub.offer({"changed": {"dev-1": [True, None]}})
        sub.offer({"changed": {"dev-2": [False, "m:1"], "dev-1": [False, None]}})
        return await sub.take(0.01)

    assert asyncio.run(scenario()) == {"changed": {"dev-1": [False, None], "dev-2": [False, "m:1"]}}


def test_a_slow_reader_gets_only_the_newest_snapshot() -> None:
    async def scenario() -> tuple[dict[str, object] | None, dict[str, object] | None]:
        sub = live.Subscriber(merge=False)
        sub.offer({"total": 1})
        sub.offer({"total": 2})
        return await sub.take(0.01), await sub.take(0.01)

    assert asyncio.run(scenario()) == ({"total": 2}, None)


def test_fleet_counts_match_the_summary(cp_client: TestClient, cp_settings: Any) -> None:
    now = protocol.utcnow()
    engine = make_engine(cp_settings.database_url)
    with Session(engine) as session:
        for device_id, online, seen in (
            ("a", True, now),
            ("b", True, now - timedelta(hours=1)),
            ("c", False, now),
            ("d", True, now),
        ):
            add_device(session, device_id)
            mark_device_state(session, device_id=device_id, online=online, state={}, seen_at=seen)
        sample = protocol.TelemetrySample(ts=now, errors=2, requests=5)
        insert_samples(session, sample_rows("d", protocol.Telemetry(seq=1, samples=[sample])))
        session.commit()
        summary = fleet_summary(session, now=protocol.utcnow())
        counts = live._fleet(session, None)
    engine.dispose()
    assert counts == {
        "total": summary.total,
        "online": summary.online,
        "by_health": summary.by_health,
    }
    assert counts["by_health"] == {"ok": 1, "stale": 1, "offline": 1, "errors": 1}
