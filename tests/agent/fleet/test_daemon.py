"""AgentNode: what it reports after a restart, and the REST-less wiring."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fleet.daemon import AgentNode, _mqtt_override
from agent.fleet.mqtt_identity import new_client_request, save_client_certificate
from agent.runtime import ModelRuntime
from controlplane.broker_tls import create_ca, issue_device_certificate
from models.protocol import RolloutEvent
from tests.agent.fleet.nodes import desired_fake_model, enrollment, node_options


def node(tmp_path: Path, key: Ed25519PrivateKey) -> AgentNode:
    options = node_options(tmp_path / "agent", hardware={"device_class": "x"}, device_class="x")
    return AgentNode(enrollment(key), ModelRuntime(), options)


def test_state_reports_restored_model_and_applied_version(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    first = node(tmp_path, key)
    first.mqtt.publish_state = lambda: None  # type: ignore[method-assign]  # no broker here
    desired = desired_fake_model(tmp_path, key, 7)
    assert first.executor.apply(desired)
    first.outbox.close()
    restarted = node(tmp_path, key)
    assert restarted.executor.restore() is not None
    state = restarted.state()
    assert state.active is not None and (state.active.name, state.active.version) == ("tiny", "1.0")
    assert state.desired_version == 7 and state.online and state.hardware_digest
    assert restarted.state().seq > state.seq
    assert len(restarted.outbox) > 0  # the first run's events wait for the broker
    restarted.outbox.close()


def test_mqtt_url_override() -> None:
    assert _mqtt_override("mqtt://broker.lan:8883") == ("broker.lan", 8883, False)
    assert _mqtt_override("mqtts://broker.lan") == ("broker.lan", 8883, True)
    assert _mqtt_override(None) == (None, None, None)


def test_mqtts_url_and_the_enrolled_tls_identity_reach_the_connection(tmp_path: Path) -> None:
    key, ca, data = Ed25519PrivateKey.generate(), create_ca(), tmp_path / "agent"
    save_client_certificate(data, issue_device_certificate(ca, new_client_request(data), "dev-1"))
    enrolled = enrollment(key)
    enrolled.mqtt.ca_pem = ca.pem()  # enrolled for plaintext (tls false), the URL says mqtts
    host, port, tls = _mqtt_override("mqtts://broker.lan")
    options = node_options(data, hardware={}, mqtt_host=host, mqtt_port=port, mqtt_tls=tls)
    built = AgentNode(enrolled, ModelRuntime(), options)
    built.outbox.close()
    settings = built.mqtt.settings
    assert (settings.host, settings.port, settings.tls) == ("broker.lan", 8883, True)
    assert settings.ca_pem == ca.pem() and settings.client_cert_file and settings.client_key_file


def test_rollout_events_are_in_the_outbox_before_any_connection(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    built = node(tmp_path, key)
    built.mqtt.publish_state = lambda: None  # type: ignore[method-assign]  # no broker here
    desired = desired_fake_model(tmp_path, key, 3)
    assert built.executor.apply(desired)  # the MQTT client was never started
    entries = built.outbox.peek(1000)
    events = [RolloutEvent.model_validate_json(e.payload) for e in entries]
    assert {e.topic for e in entries} == {"ef/v1/devices/dev-1/events"}
    assert [e.kind for e in events][0] == "accepted" and events[-1].kind == "active"
    assert all(e.qos == 1 for e in entries) and built.outbox.appended.is_set()
    built.outbox.close()
