"""Device commands: the API stores and publishes them, the bridge records the answers."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controlplane import cli
from controlplane.console import devices as console_devices
from controlplane.console.client import ApiClient
from controlplane.console.context import Context
from controlplane.db_models import Role
from models import protocol
from tests.controlplane.helpers import MqttDevice, bearer, enroll, get_json
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

WAIT_S = 15.0


pytestmark = pytest.mark.usefixtures("fast_bridge")


class Agent(MqttDevice):
    """A device that also subscribes to its own `cmd` topic, as the agent does."""

    def __init__(self, broker: MosquittoBroker, creds: dict[str, Any]) -> None:
        super().__init__(broker, creds)
        self.commands: queue.Queue[protocol.Command] = queue.Queue()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.commands.put(
            protocol.Command.model_validate_json(m.payload)
        )
        self.client.subscribe(self.topic("cmd"), qos=1)
        assert subscribed.wait(WAIT_S)

    def next_command(self) -> protocol.Command:
        return self.commands.get(timeout=WAIT_S)

    def answer(self, command: protocol.Command, **fields: Any) -> None:
        self.send("cmd/result", protocol.CommandResult(request_id=command.request_id, **fields))


@pytest.fixture
def agent(
    fleet_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str]
) -> Iterator[Agent]:
    with closing(Agent(broker, enroll(fleet_client, admin_headers))) as device:
        yield device


def command_json(client: TestClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    return get_json(client, f"/api/v1/commands/{request_id}", headers)


def answered(client: TestClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = command_json(client, headers, request_id)
        return found if found["status"] != "pending" else None

    result: dict[str, Any] = wait_until(check, f"the answer to {request_id}")
    return result


def test_command_is_stored_published_and_answered(
    fleet_client: TestClient, agent: Agent, admin_headers: dict[str, str]
) -> None:
    resp = fleet_client.post(
        f"/api/v1/devices/{agent.id}/commands",
        json={"command": "benchmark", "args": {"tokens": 16}},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "pending" and created["device_id"] == agent.id
    sent = agent.next_command()
    assert (sent.request_id, sent.command, sent.args) == (
        created["request_id"],
        "benchmark",
        {"tokens": 16},
    )
    agent.answer(sent, ok=True, result={"tokens_per_s": 41.5})
    done = answered(fleet_client, admin_headers, sent.request_id)
    assert done["status"] == "succeeded" and done["result"] == {"tokens_per_s": 41.5}
    assert done["answered_at"] is not None
    agent.answer(sent, ok=False, error="late duplicate")  # the first answer stays
    listed = fleet_client.get(f"/api/v1/devices/{agent.id}/commands", headers=admin_headers)
    assert [c["request_id"] for c in listed.json()] == [sent.request_id]
    assert command_json(fleet_client, admin_headers, sent.request_id)["status"] == "succeeded"


def test_failed_answer_is_recorded(
    fleet_client: TestClient, agent: Agent, admin_headers: dict[str, str]
) -> None:
    fleet_client.post(
        f"/api/v1/devices/{agent.id}/commands",
        json={"command": "restart-engine"},
        headers=admin_headers,
    )
    sent = agent.next_command()
    agent.answer(sent, ok=False, error="no fleet model is active on this device")
    done = answered(fleet_client, admin_headers, sent.request_id)
    assert (done["status"], done["ok"], done["error"]) == (
        "failed",
        False,
        "no fleet model is active on this device",
    )


def test_refusals_use_the_error_shape(
    fleet_client: TestClient,
    agent: Agent,
    admin_headers: dict[str, str],
    make_token: Callable[[Role], str],
) -> None:
    url = f"/api/v1/devices/{agent.id}/commands"
    viewer = bearer(make_token(Role.viewer))
    resp = fleet_client.post(url, json={"command": "reprobe"}, headers=viewer)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert fleet_client.get(url, headers=viewer).status_code == 200
    resp = fleet_client.post(url, json={"command": "selftest"}, headers=admin_headers)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "validation_error"
    resp = fleet_client.post(
        "/api/v1/devices/dev-nope/commands", json={"command": "reprobe"}, headers=admin_headers
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "device_not_found"
    resp = fleet_client.get("/api/v1/commands/cmd-nope", headers=admin_headers)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "command_not_found"
    assert (
        fleet_client.post(f"/api/v1/devices/{agent.id}/revoke", headers=admin_headers).status_code
        == 200
    )
    resp = fleet_client.post(url, json={"command": "reprobe"}, headers=admin_headers)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "device_revoked"


def test_mqtt_disabled_is_503(cp_client: TestClient, admin_headers: dict[str, str]) -> None:
    device = enroll(cp_client, admin_headers)
    resp = cp_client.post(
        f"/api/v1/devices/{device['device_id']}/commands",
        json={"command": "reprobe"},
        headers=admin_headers,
    )
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "mqtt_disabled"


def test_cli_sends_and_waits_for_the_answer(
    fleet_client: TestClient,
    agent: Agent,
    admin_token: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def answer() -> None:
        agent.answer(agent.next_command(), ok=True, result={"device_class": "cpu-x86"})

    responder = threading.Thread(target=answer)
    responder.start()
    argv = ["devices", "command", agent.id, "reprobe", "--wait", "--timeout", str(WAIT_S)]
    with pytest.MonkeyPatch.context() as patch:  # the console, through the app's own client
        context = Context("test", "http://testserver", admin_token)
        patch.setattr(
            console_devices, "client", lambda _args: ApiClient(context, http=fleet_client)
        )
        assert cli.main(argv) == 0
    responder.join()
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "succeeded" and printed["result"] == {"device_class": "cpu-x86"}
