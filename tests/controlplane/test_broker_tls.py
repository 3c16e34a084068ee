"""MQTT over TLS end to end: the fleet CA, broker-config's TLS listener, enrollment handing the
CA to the device, the agent's `mqtts://` connection and the control plane's bridge over TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.fleet.enroll import Enrollment, load_enrollment, save_enrollment
from agent.fleet.mqtt import parse_broker_url
from controlplane.broker_tls import BrokerTlsFiles
from controlplane.cli import main
from controlplane.core.config import Settings
from controlplane.main import create_app
from tests.controlplane.conftest import BrokerTls
from tests.controlplane.helpers import device_mqtt, enroll
from tests.support.mosquitto import MosquittoBroker

WAIT_S = 10.0


@pytest.fixture
def broker_tls() -> BrokerTls:
    """The device listener on TLS, signed by the control plane's CA."""
    return "server"


def test_enrollment_hands_out_the_ca_and_the_agent_connects_with_mqtts(
    broker_client: TestClient,
    broker: MosquittoBroker,
    admin_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    answer = enroll(broker_client, admin_headers)
    assert answer["mqtt"]["tls"] and answer["mqtt"]["port"] == broker.device_port
    save_enrollment(tmp_path / "agent", Enrollment.model_validate(answer))
    stored = load_enrollment(tmp_path / "agent")
    assert stored is not None and stored.mqtt.ca_pem is not None
    assert stored.mqtt.ca_pem.startswith("-----BEGIN CERTIFICATE-----")

    address = parse_broker_url(f"mqtts://{broker.host}:{broker.device_port}")
    with device_mqtt(stored, address, tmp_path / "outbox.db") as agent:
        assert agent.wait_connected(WAIT_S), broker.log()[-2000:]


def test_clients_without_the_fleet_ca_or_without_tls_are_refused(
    broker_client: TestClient,
    broker: MosquittoBroker,
    admin_headers: dict[str, str],
) -> None:
    answer = enroll(broker_client, admin_headers)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=answer["device_id"],
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(answer["mqtt"]["username"], answer["mqtt"]["password"])
    client.tls_set_context(ssl.create_default_context())  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(broker.host, broker.device_port)

    plain = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=answer["device_id"],
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    plain.username_pw_set(answer["mqtt"]["username"], answer["mqtt"]["password"])
    plain.connect(broker.host, broker.device_port)
    rc = plain.loop(timeout=2.0)
    rc = plain.loop(timeout=2.0) if rc == mqtt.MQTT_ERR_SUCCESS else rc
    assert not plain.is_connected() and rc != mqtt.MQTT_ERR_SUCCESS


def test_the_bridge_connects_over_tls(broker_settings: Settings, fast_bridge: None) -> None:
    host, port = broker_settings.mqtt_host, broker_settings.mqtt_port
    settings = broker_settings.model_copy(
        update={"mqtt_enabled": True, "mqtt_cp_url": f"mqtts://{host}:{port}"}
    )
    with TestClient(create_app(settings)) as client:
        assert client.app.state.bridge.wait_connected(WAIT_S)


def test_broker_config_writes_a_tls_listener_the_broker_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(tmp_path / "cp"))
    monkeypatch.setenv("EDGEFLEET_CP_DATABASE_URL", f"sqlite:///{tmp_path / 'cp.db'}")
    out = tmp_path / "etc"
    assert main(["broker-config", "--out", str(out), "--hostname", "127.0.0.1"]) == 0
    assert "EDGEFLEET_CP_MQTT_TLS=1" in capsys.readouterr().out
    conf = (out / "edgefleet.conf").read_text()
    for line in (
        "listener 1883 127.0.0.1",
        "listener 8883",
        "use_username_as_clientid true",
        f"cafile {out / 'ca.crt'}",
        f"certfile {out / 'server.crt'}",
        f"keyfile {out / 'server.key'}",
        "max_packet_size 1048576",
    ):
        assert line in conf.splitlines(), line
    assert (out / "ca.crt").read_text() == (tmp_path / "cp" / "mqtt-tls" / "ca.crt").read_text()
    assert (tmp_path / "cp" / "mqtt-tls" / "ca.key").stat().st_mode & 0o077 == 0

    files = BrokerTlsFiles(out / "ca.crt", out / "server.crt", out / "server.key")
    broker = MosquittoBroker(tmp_path / "mqtt", template=out / "edgefleet.conf", tls=files)
    broker.set_users({})
    with broker:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.tls_set_context(ssl.create_default_context(cafile=str(out / "ca.crt")))
        client.connect(broker.host, broker.device_port)  # the TLS handshake verifies the name
        client.disconnect()
