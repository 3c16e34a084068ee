"""Enrollment: trade a one-time token for per-device credentials, kept 0600 in the data dir.

Protocol: `POST /api/v1/enroll` (docs/controlplane.md). The response is the only time the
device sees its secrets, so it is written atomically before anything else uses it.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from agent.errors import AgentError
from agent.fleet.mqtt_identity import new_client_request, save_client_certificate
from models.files import atomic_write_bytes
from models.protocol import EnrollmentRequest, EnrollmentResponse

_LOGGER = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
HTTP_TIMEOUT_S = 30.0


class EnrollmentError(AgentError):
    """Enrollment failed; the message says what to do."""


class Enrollment(EnrollmentResponse):
    """The control plane's answer to /enroll (models.protocol), as stored on the device."""

    def trusted_keys(self) -> list[Ed25519PublicKey]:
        """The keys whose manifest signatures this device accepts (control plane's first)."""
        keys = [self.signing_public_key, *self.trusted_public_keys]
        out: list[Ed25519PublicKey] = []
        for text in dict.fromkeys(keys):
            try:
                out.append(Ed25519PublicKey.from_public_bytes(base64.b64decode(text)))
            except ValueError:
                _LOGGER.warning("ignoring a trusted key that is not base64 Ed25519")
        return out

    def artifact_headers(self) -> dict[str, str]:
        """Headers for every artifact download."""
        return {"Authorization": f"Bearer {self.artifacts.token}"}


def load_enrollment(data_dir: Path) -> Enrollment | None:
    """The stored credentials, or None when the device has not enrolled."""
    path = data_dir / CREDENTIALS_FILE
    if not path.is_file():
        return None
    try:
        return Enrollment.model_validate_json(path.read_bytes())
    except (ValidationError, OSError) as exc:
        raise EnrollmentError(
            f"{path} is unreadable ({exc}); delete it and enroll again with a new token"
        ) from exc


def save_enrollment(data_dir: Path, enrollment: Enrollment) -> Path:
    """Write the credentials readable by this user only (0600), atomically."""
    path = data_dir / CREDENTIALS_FILE
    atomic_write_bytes(path, enrollment.model_dump_json(indent=2).encode(), mode=0o600)
    return path


def enroll(
    control_plane_url: str,
    token: str,
    data_dir: Path,
    *,
    hardware: dict[str, Any],
    agent_version: str,
    name: str | None = None,
    device_class: str | None = None,
) -> Enrollment:
    """POST /api/v1/enroll with the one-time token and store what comes back."""
    import httpx

    try:
        request = EnrollmentRequest(
            token=token,
            hardware=hardware,
            agent_version=agent_version,
            csr=new_client_request(data_dir),
            name=name or "",
            device_class=device_class or None,
        )
    except ValidationError as exc:
        raise EnrollmentError(f"the enrollment request is invalid: {exc}") from exc
    url = control_plane_url.rstrip("/") + "/api/v1/enroll"
    try:
        resp = httpx.post(
            url, json=request.model_dump(exclude_defaults=True), timeout=HTTP_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise EnrollmentError(f"cannot reach the control plane at {url}: {exc}") from exc
    if resp.status_code == 401:
        raise EnrollmentError(
            "the enrollment token is unknown, already used or expired; "
            "ask an operator for a new one (`edgefleet-cp enroll-token`)"
        )
    if resp.status_code != 201:
        raise EnrollmentError(f"enrollment failed: HTTP {resp.status_code} {resp.text[:300]}")
    try:
        enrollment = Enrollment.model_validate_json(resp.content)
    except ValidationError as exc:
        raise EnrollmentError(f"the control plane's enrollment answer is malformed: {exc}") from exc
    if enrollment.mqtt.client_cert_pem:
        save_client_certificate(data_dir, enrollment.mqtt.client_cert_pem)
    path = save_enrollment(data_dir, enrollment)
    _LOGGER.info("enrolled as %s; credentials in %s", enrollment.device_id, path)
    return enrollment


def ensure_enrolled(
    control_plane_url: str | None,
    token: str | None,
    data_dir: Path,
    *,
    hardware: dict[str, Any],
    agent_version: str,
) -> Enrollment:
    """The stored enrollment, or a new one when a token is given."""
    existing = load_enrollment(data_dir)
    if existing is not None:
        return existing
    if not control_plane_url or not token:
        raise EnrollmentError(
            "this agent is not enrolled: pass --control-plane URL and an enrollment token "
            "(EDGEFLEET_AGENT_ENROLLMENT_TOKEN)"
        )
    return enroll(
        control_plane_url, token, data_dir, hardware=hardware, agent_version=agent_version
    )
