"""The dashboard's logs page: linked from the device page, shows the latest `logs` answer."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.crud.commands import create_command, record_command_result
from models.protocol import CommandResult
from tests.controlplane.helpers import enroll


def test_logs_page_shows_the_latest_answer(
    cp_client: TestClient, admin_headers: dict[str, str], admin_token: str
) -> None:
    device_id = enroll(cp_client, admin_headers)["device_id"]
    cp_client.post("/login", data={"token": admin_token}, follow_redirects=False)
    page = cp_client.get(f"/devices/{device_id}")
    assert f'href="/devices/{device_id}/logs"' in page.text
    empty = cp_client.get(f"/devices/{device_id}/logs")
    assert empty.status_code == 200 and "No logs asked for yet" in empty.text
    app: Any = cp_client.app
    with Session(app.state.engine) as session:
        row = create_command(
            session, device_id=device_id, command="logs", args={"since_s": 600}, created_by="t"
        )
        record_command_result(
            session,
            device_id=device_id,
            result=CommandResult(
                request_id=row.request_id,
                ok=True,
                result={
                    "lines": ["12:00 INFO agent.fleet.mqtt: connected to broker"],
                    "count": 1,
                    "truncated": False,
                },
            ),
        )
        session.commit()
    shown = cp_client.get(f"/devices/{device_id}/logs")
    assert "connected to broker" in shown.text and "1 lines" in shown.text
    refused = cp_client.post(f"/devices/{device_id}/logs", follow_redirects=False)
    assert refused.status_code in (303, 403)  # no CSRF token: never sent
