"""Device enrollment: a one-time token in, per-device credentials out."""

from __future__ import annotations

import logging

from sqlmodel import Session

from controlplane import crud
from controlplane.broker_auth import hash_password
from controlplane.broker_sync import sync_broker
from controlplane.broker_tls import issue_device_certificate, load_ca, read_ca_pem
from controlplane.core.config import Settings
from controlplane.errors import EnrollmentRefused
from controlplane.security import ARTIFACT_TOKEN_PREFIX, hash_token, new_device_id, new_secret
from controlplane.signing_key import SigningIdentity
from models.protocol import (
    TOPIC_PREFIX,
    ArtifactAccess,
    EnrollmentRequest,
    EnrollmentResponse,
    MqttAccess,
)

_LOGGER = logging.getLogger(__name__)


def enroll_device(
    session: Session, *, settings: Settings, signing: SigningIdentity, request: EnrollmentRequest
) -> EnrollmentResponse:
    """Claim the token, create the device, add it to the broker; EnrollmentRefused if invalid."""
    # The CA is read before the token is claimed, so a missing file costs no token.
    ca_pem = read_ca_pem(settings.mqtt_ca_cert_file) if settings.mqtt_tls else None
    ca = load_ca(settings.mqtt_ca_cert_file, settings.mqtt_ca_key_file) if request.csr else None
    if request.csr and ca is None:
        _LOGGER.warning(
            "no MQTT CA (run `edgefleet-cp broker-config`): enrolling a device "
            "without the client certificate it asked for"
        )
    token = crud.claim_enrollment_token(session, secret=request.token)
    if token is None:
        session.rollback()
        raise EnrollmentRefused(
            "enrollment token is unknown, already used or expired; "
            "ask an operator for a new one (edgefleet-cp enroll-token)"
        )
    device_id = new_device_id()
    mqtt_password = new_secret()
    client_cert_pem = (
        issue_device_certificate(ca, request.csr, device_id) if ca and request.csr else None
    )
    artifact_token = new_secret(ARTIFACT_TOKEN_PREFIX)
    hw_class = request.hardware.get("device_class")
    device_class = request.device_class or (hw_class if isinstance(hw_class, str) else "")
    crud.create_device(
        session,
        device_id=device_id,
        name=request.name or device_id,
        device_class=device_class,
        agent_version=request.agent_version,
        hardware=request.hardware,
        labels=dict(token.labels),
        mqtt_password_hash=hash_password(mqtt_password),
        artifact_token_hash=hash_token(artifact_token),
    )
    token.device_id = device_id
    session.add(token)
    session.commit()
    sync_broker(session, settings)
    _LOGGER.info("enrolled device %s (%s)", device_id, device_class or "unknown class")
    return EnrollmentResponse(
        device_id=device_id,
        name=request.name or device_id,
        labels=dict(token.labels),
        mqtt=MqttAccess(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            tls=settings.mqtt_tls,
            username=device_id,
            password=mqtt_password,
            client_id=device_id,
            topic_prefix=f"{TOPIC_PREFIX}/devices/{device_id}",
            ca_pem=ca_pem,
            client_cert_pem=client_cert_pem,
        ),
        artifacts=ArtifactAccess(base_url=artifacts_url(settings), token=artifact_token),
        signing_public_key=signing.public_key,
        signing_key_id=signing.key_id,
        trusted_public_keys=signing.trusted_public_keys,
    )


def artifacts_url(settings: Settings) -> str:
    """Base URL of the artifact endpoints as devices reach them."""
    return f"{settings.public_url}/api/v1/artifacts"
