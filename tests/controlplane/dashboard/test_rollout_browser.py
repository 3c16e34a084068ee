"""Create, approve, pause and abort a rollout from the dashboard in a real headless Chromium,
and watch its page update live (server-sent events) while devices report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from controlplane import crud
from controlplane.db_models import Role
from controlplane.rollouts import controller
from controlplane.rollouts.models import RolloutDevice
from tests.controlplane.dashboard.browser import chromium_page, needs_chromium
from tests.controlplane.live import sqlite_control_plane
from tests.controlplane.rollouts.conftest import add_device, add_model

pytestmark = needs_chromium


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A control plane (rollout controller running) with a model and three devices."""
    monkeypatch.setattr(controller, "TICK_S", 0.2)
    with sqlite_control_plane(tmp_path, monkeypatch) as server:
        engine = server.engine
        with Session(engine) as session:
            _op, operator = crud.create_api_token(session, name="olga", role=Role.operator)
            add_model(session, version="2.0")
            for i in range(3):
                add_device(session, f"dev-{i}", labels={"site": "a" if i < 2 else "b"})
        yield {"url": server.url, "operator": operator, "engine": engine}


def report_success(engine: Any, rollout_id: str) -> None:
    """What devices would report over MQTT: every dispatched device switched and is healthy."""
    with Session(engine) as session:
        rows = session.exec(
            select(RolloutDevice).where(
                RolloutDevice.rollout_id == rollout_id, RolloutDevice.state == "in_progress"
            )
        ).all()
        assert rows, "the controller dispatched nothing"
        for row in rows:
            row.state, row.sub_status = "succeeded", "active"
            session.add(row)
        session.commit()


def test_create_approve_pause_abort_with_live_updates(fleet: dict[str, Any]) -> None:
    from playwright.sync_api import Dialog, expect

    url = fleet["url"]
    problems: list[str] = []
    with chromium_page(problems) as page:
        page.goto(f"{url}/login")
        page.fill("#token", fleet["operator"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")

        page.goto(f"{url}/rollouts")
        page.click("#new-rollout")
        page.wait_for_url(f"{url}/rollouts/new")
        page.fill("#labels", "site=a")
        expect(page.locator("#preview-count")).to_have_text("2 devices match (0 online)")
        expect(page.locator("#preview-devices li")).to_have_count(2)
        page.select_option("#model", "tiny:2.0")
        page.fill("#waves", "1,ten")
        page.click("#create-rollout")
        expect(page.locator("#error-waves")).to_contain_text("neither a percentage")
        assert page.input_value("#labels") == "site=a"  # the form keeps what was typed
        page.fill("#waves", "1,100%")
        page.check("#require_approval")
        page.click("#create-rollout")
        page.wait_for_url(f"{url}/rollouts/ro-*")
        rollout_id = page.url.rsplit("/", 1)[-1]
        expect(page.locator("#flash")).to_contain_text(f"rollout {rollout_id} created")

        # No reload from here: the controller starts the rollout and the page follows.
        status = page.locator("#rollout-status")
        expect(status).to_have_text("running", timeout=10_000)
        wave0 = page.locator("li[data-wave='0']")
        expect(wave0.locator("[data-field='in_progress']")).to_have_text("1")
        report_success(fleet["engine"], rollout_id)
        expect(status).to_have_text("waiting_approval", timeout=10_000)
        expect(wave0.locator("[data-field='succeeded']")).to_have_text("1")
        assert page.locator("form[data-verb='approve']").is_visible()
        assert not page.locator("form[data-verb='pause']").is_visible()

        page.click("button[data-action='approve']")
        expect(page.locator("#flash")).to_contain_text("approve done")
        expect(status).to_have_text("running")
        page.click("button[data-action='pause']")
        expect(status).to_have_text("paused")
        expect(page.locator("#flash")).to_contain_text("now paused")

        asked: list[str] = []

        def dismiss(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.click("button[data-action='abort']")
        time.sleep(0.3)
        assert asked and "Abort" in asked[0]
        expect(status).to_have_text("paused")  # dismissed: nothing happened
        page.once("dialog", lambda d: d.accept())
        page.click("button[data-action='abort']")
        expect(status).to_have_text("aborted")
        assert page.locator("form[data-verb='rollback']").is_visible()
    # the one refused form (422) is the only error the browser logged
    assert len(problems) == 1 and "422" in problems[0], problems
