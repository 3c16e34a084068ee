"""The MQTT bridge against a real Mosquitto and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel
from sqlmodel import Session

from controlplane.core.config import Settings
from controlplane.telemetry_ingest import Inbound
from models import protocol
from tests.controlplane.helpers import MqttDevice, enroll
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

WAIT_S = 15.0


pytestmark = pytest.mark.usefixtures("fast_bridge")


@pytest.fixture
def make_device(
    fleet_client: TestClient, broker: MosquittoBroker, admin_headers: dict[str, str]
) -> Iterator[Callable[[], MqttDevice]]:
    devices: list[MqttDevice] = []

    def _make() -> MqttDevice:
        device = MqttDevice(broker, enroll(fleet_client, admin_headers))
        devices.append(device)
        return device

    yield _make
    for device in devices:
        device.close()


def device_json(client: TestClient, headers: dict[str, str], device_id: str) -> dict[str, Any]:
    resp = client.get(f"/api/v1/devices/{device_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def online_state(seq: int = 1) -> protocol.DeviceState:
    return protocol.DeviceState(
        online=True,
        seq=seq,
        agent_version="0.2.0",
        device_class="cpu-x86",
        active=protocol.ActiveModel(
            name="tiny", version="1.0.0", variant="gguf-q4_0", engine="llamacpp"
        ),
    )


def telemetry(seq: int, tps: float = 42.0) -> protocol.Telemetry:
    return protocol.Telemetry(
        seq=seq, samples=[protocol.TelemetrySample(tokens_per_s=tps, ttft_ms=50.0)]
    )


def stats(client: TestClient) -> dict[str, int]:
    result: dict[str, int] = client.app.state.bridge.stats  # type: ignore[attr-defined]
    return result


def series(client: TestClient, headers: dict[str, str], device_id: str) -> list[Any]:
    resp = client.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"metric": "tokens_per_s", "bucket": 3600},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    points: list[Any] = resp.json()["points"]
    return points


def test_state_marks_device_online_and_last_will_offline(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice], admin_headers: dict[str, str]
) -> None:
    device = make_device()
    assert device_json(fleet_client, admin_headers, device.id)["online"] is False
    device.send("state", online_state(), retain=True)
    shown = wait_until(
        lambda: (d := device_json(fleet_client, admin_headers, device.id))["online"] and d,
        "device online",
    )
    assert shown["active_model"] == "tiny:1.0.0" and shown["agent_version"] == "0.2.0"
    assert shown["last_seen"] is not None

    device.cut()
    wait_until(
        lambda: not device_json(fleet_client, admin_headers, device.id)["online"],
        "Last Will marks device offline",
    )


def test_telemetry_reaches_the_api_and_duplicates_are_ignored(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice], admin_headers: dict[str, str]
) -> None:
    device = make_device()
    device.send("telemetry", telemetry(1, 40.0))
    device.send("telemetry", telemetry(2, 44.0))
    points = wait_until(
        lambda: (p := series(fleet_client, admin_headers, device.id)) and p[0]["count"] == 2 and p,
        "telemetry in the API",
    )
    assert points[0]["avg"] == pytest.approx(42.0) and points[0]["max"] == pytest.approx(44.0)
    before = stats(fleet_client)["persisted"]
    resent = telemetry(1, 40.0)
    resent.samples[0].ts = protocol.utcnow()  # a different sample: stored
    duplicate = protocol.Telemetry.model_validate_json(resent.model_dump_json())
    device.send("telemetry", resent)
    device.send("telemetry", duplicate)  # exactly the same batch again: ignored
    wait_until(lambda: stats(fleet_client)["persisted"] >= before + 2, "both batches handled")
    assert series(fleet_client, admin_headers, device.id)[0]["count"] == 3
    assert stats(fleet_client)["duplicate_samples"] == 1


def test_messages_with_v5_properties_and_a_non_utf8_topic_are_handled(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice], admin_headers: dict[str, str]
) -> None:
    device = make_device()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("trace", "t" * 300)  # the bridge skips properties it never reads
    props.MessageExpiryInterval = 600
    data = telemetry(1).model_dump_json()
    device.client.publish(device.topic("telemetry"), data, qos=1, properties=props)
    wait_until(lambda: series(fleet_client, admin_headers, device.id), "telemetry in the API")
    before = stats(fleet_client).get("invalid", 0)
    bridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    bridge._on_publish_packet(b"ef/v1/devices/\xff/state", b"{}", 0, 0)
    assert stats(fleet_client)["invalid"] == before + 1


def test_invalid_messages_are_counted_and_the_loop_goes_on(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice], admin_headers: dict[str, str]
) -> None:
    device = make_device()
    failures: list[str] = []

    def broken_recorder(_session: Session, items: list[Inbound]) -> None:
        failures.extend(item.device_id for item in items)
        raise RuntimeError("recorder bug")

    fleet_client.app.state.bridge.add_recorder(["events"], broken_recorder)  # type: ignore[attr-defined]
    device.send("telemetry", b"{not json")
    device.send("telemetry", b'{"v": 1, "seq": -1, "samples": []}')
    device.send("state", b'{"online": "maybe"}')
    device.send("events", protocol.RolloutEvent(desired_version=1, model="t", kind="accepted"))
    device.send("telemetry", telemetry(7))
    wait_until(lambda: series(fleet_client, admin_headers, device.id), "good message after bad")
    counts = wait_until(lambda: (s := stats(fleet_client)).get("quarantined") and s, "stats")
    assert counts["invalid"] == 3 and counts["quarantined"] == 1  # the recorder's batch refused
    assert set(failures) == {device.id}


def test_unknown_and_revoked_devices_are_rejected(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice], admin_headers: dict[str, str]
) -> None:
    device = make_device()
    device.send("telemetry", telemetry(1))
    wait_until(lambda: series(fleet_client, admin_headers, device.id), "first telemetry")
    bridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    # The control plane's own user may publish anywhere under ef/v1: use it to fake a stranger.
    bridge.publish(protocol.device_topic("dev-nobody", "telemetry"), telemetry(1))
    wait_until(lambda: stats(fleet_client).get("rejected") == 1, "unknown device rejected")
    resp = fleet_client.post(f"/api/v1/devices/{device.id}/revoke", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    bridge.publish(device.topic("telemetry"), telemetry(2))
    wait_until(lambda: stats(fleet_client).get("rejected") == 2, "revoked device rejected")
    assert series(fleet_client, admin_headers, device.id)[0]["count"] == 1


def test_events_reach_recorders_added_by_other_components(
    fleet_client: TestClient, make_device: Callable[[], MqttDevice]
) -> None:
    device = make_device()
    seen: list[tuple[str, BaseModel, bool]] = []

    def record(session: Session, items: list[Inbound]) -> None:
        seen.extend((i.device_id, i.message, session.in_transaction()) for i in items)

    fleet_client.app.state.bridge.add_recorder(["events"], record)  # type: ignore[attr-defined]
    event = protocol.RolloutEvent(desired_version=3, model="tiny", kind="downloading")
    device.send("events", event)
    wait_until(lambda: seen, "event recorder called")
    device_id, message, in_transaction = seen[0]
    assert device_id == device.id and in_transaction  # stored before the commit and the ack
    assert isinstance(message, protocol.RolloutEvent) and message.kind == "downloading"


def test_bridge_reconnects_after_broker_restart(
    fleet_client: TestClient,
    make_device: Callable[[], MqttDevice],
    broker: MosquittoBroker,
    admin_headers: dict[str, str],
) -> None:
    device = make_device()
    device.send("telemetry", telemetry(1))
    wait_until(lambda: series(fleet_client, admin_headers, device.id), "telemetry before restart")
    bridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    broker.restart()
    wait_until(
        lambda: not bridge.connected.is_set() or stats(fleet_client).get("reconnects"),
        "bridge notices the restart",
    )
    assert bridge.wait_connected(WAIT_S)
    wait_until(lambda: device.client.is_connected(), "device reconnects")  # paho retries itself
    device.send("telemetry", telemetry(2))
    wait_until(
        lambda: series(fleet_client, admin_headers, device.id)[0]["count"] == 2,
        "telemetry after restart",
    )
    assert stats(fleet_client)["reconnects"] >= 1


def test_bridge_is_off_unless_enabled(cp_client: TestClient) -> None:
    assert cp_client.app.state.bridge is None  # type: ignore[attr-defined]


def test_retention_setting_defaults() -> None:
    assert Settings().telemetry_raw_retention == timedelta(hours=48)


def test_fleet_simulator_devices_report_through_the_bridge(
    fleet_client: TestClient, admin_headers: dict[str, str]
) -> None:
    import asyncio

    from agent.fleetsim.fleet import DeviceSpec, FleetSimulator

    creds = [enroll(fleet_client, admin_headers) for _ in range(5)]
    specs = [DeviceSpec(c["device_id"], c["mqtt"]["password"]) for c in creds]
    settings = fleet_client.app.state.settings  # type: ignore[attr-defined]
    bridge = fleet_client.app.state.bridge  # type: ignore[attr-defined]
    desired_seen: list[tuple[str, int]] = []

    async def run() -> None:
        sim = FleetSimulator(
            specs,
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            on_desired=lambda dev, d: desired_seen.append((dev.device_id, d.version)),
        )
        await sim.start(timeout_s=WAIT_S)
        await sim.run_telemetry(interval_s=0.05, batches=3)
        bridge.publish(
            protocol.device_topic(specs[0].device_id, "desired"),
            protocol.DesiredState(version=4),
            retain=True,
        )
        await asyncio.to_thread(wait_until, lambda: desired_seen, "desired reaches the device")
        await asyncio.to_thread(
            wait_until,
            lambda: all(
                device_json(fleet_client, admin_headers, s.device_id)["online"] for s in specs
            ),
            "simulated devices online",
        )
        await sim.stop()

    asyncio.run(run())
    assert desired_seen == [(specs[0].device_id, 4)]
    fleet = wait_until(
        lambda: (
            (
                r := fleet_client.get(
                    "/api/v1/telemetry", headers=admin_headers, params={"bucket": 3600}
                ).json()
            )["points"]
            and sum(p["count"] for p in r["points"]) == 15
            and r
        ),
        "15 telemetry samples",
    )
    assert fleet["points"]
    wait_until(
        lambda: (
            not any(device_json(fleet_client, admin_headers, s.device_id)["online"] for s in specs)
        ),
        "clean disconnect reports offline",
    )
