"""Per-device TLS client certificates: the agent makes its key and a request at enrollment,
the control plane signs it, and a broker that requires client certificates lets in only a
device holding its own key, as long as it is not revoked."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.fleet.enroll import Enrollment, enroll
from agent.fleet.mqtt import AgentMqtt
from agent.fleet.mqtt_identity import CLIENT_KEY_FILE
from controlplane.cli import main
from tests.controlplane.conftest import BrokerTls
from tests.controlplane.helpers import device_mqtt
from tests.support.mosquitto import MosquittoBroker

WAIT_S = 10.0
REFUSED_WINDOW_S = 3.0  # a refused agent keeps retrying; it must not get in meanwhile


@pytest.fixture
def broker_tls() -> BrokerTls:
    """The device listener on TLS and requiring a client certificate from the fleet CA."""
    return "client_certs"


@pytest.fixture
def enrolled(
    cp_server: str, admin_headers: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Enrollment, dict[str, Any]]:
    """A device enrolled through the agent's own code (data dir tmp_path/agent); what it sent."""
    token = httpx.post(f"{cp_server}/api/v1/enrollment-tokens", json={}, headers=admin_headers)
    sent: dict[str, Any] = {}
    real_post = httpx.post

    def recording_post(url: str, **kwargs: Any) -> httpx.Response:
        sent.update(kwargs.get("json") or {})
        return real_post(url, **kwargs)

    monkeypatch.setattr(httpx, "post", recording_post)
    enrollment = enroll(
        cp_server, token.json()["token"], tmp_path / "agent", hardware={}, agent_version="0.1.0"
    )
    monkeypatch.setattr(httpx, "post", real_post)
    return enrollment, sent


def connection(
    enrollment: Enrollment, broker: MosquittoBroker, tmp_path: Path, *, cert: bool
) -> AbstractContextManager[AgentMqtt]:
    return device_mqtt(
        enrollment,
        (broker.host, broker.device_port, True),
        tmp_path / f"outbox-{cert}.db",
        cert_dir=tmp_path / "agent" if cert else None,
    )


def test_the_key_stays_on_the_device_and_its_certificate_opens_the_broker(
    enrolled: tuple[Enrollment, dict[str, Any]], broker: MosquittoBroker, tmp_path: Path
) -> None:
    enrollment, sent = enrolled
    assert "PRIVATE KEY" not in json.dumps(sent) and "CERTIFICATE REQUEST" in sent["csr"]
    key_file = tmp_path / "agent" / CLIENT_KEY_FILE
    assert key_file.stat().st_mode & 0o077 == 0
    assert enrollment.mqtt.client_cert_pem is not None
    cert = x509.load_pem_x509_certificate(enrollment.mqtt.client_cert_pem.encode())
    subject = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert subject == enrollment.device_id  # not what the request asked for
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*public) == key.public_key().public_bytes(*public)

    with connection(enrollment, broker, tmp_path, cert=True) as with_cert:
        assert with_cert.wait_connected(WAIT_S), broker.log()[-2000:]


def test_without_its_certificate_or_once_revoked_a_device_is_refused(
    enrolled: tuple[Enrollment, dict[str, Any]],
    cp_server: str,
    broker: MosquittoBroker,
    admin_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    enrollment, _ = enrolled
    with connection(enrollment, broker, tmp_path, cert=False) as password_only:
        assert not password_only.wait_connected(REFUSED_WINDOW_S)

    with connection(enrollment, broker, tmp_path, cert=True) as device:
        assert device.wait_connected(WAIT_S)
        resp = httpx.post(
            f"{cp_server}/api/v1/devices/{enrollment.device_id}/revoke", headers=admin_headers
        )
        assert resp.status_code == 200
        deadline = time.monotonic() + WAIT_S
        while device.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not device.connected  # the broker reload drops it ...
        assert not device.wait_connected(REFUSED_WINDOW_S)  # ... and its certificate won't help


def test_bad_certificate_requests_are_refused_at_enrollment(
    cp_server: str, admin_headers: dict[str, str]
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    for csr in ("not a request", weak_csr):
        token = httpx.post(
            f"{cp_server}/api/v1/enrollment-tokens", json={}, headers=admin_headers
        ).json()["token"]
        resp = httpx.post(
            f"{cp_server}/api/v1/enroll",
            json={"token": token, "agent_version": "0.1.0", "csr": csr},
        )
        assert resp.status_code == 422, resp.text
        assert "csr" in resp.text


def test_broker_config_can_require_client_certificates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEFLEET_CP_DATA_DIR", str(tmp_path / "cp"))
    monkeypatch.setenv("EDGEFLEET_CP_DATABASE_URL", f"sqlite:///{tmp_path / 'cp.db'}")
    assert main(["broker-config", "--out", str(tmp_path / "plain")]) == 0
    assert "require_certificate false" in (tmp_path / "plain" / "edgefleet.conf").read_text()
    assert main(["broker-config", "--out", str(tmp_path / "mtls"), "--client-certs"]) == 0
    assert "require_certificate true" in (tmp_path / "mtls" / "edgefleet.conf").read_text()
