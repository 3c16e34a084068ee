"""The device's TLS client identity for MQTT: a key made on the device, which never leaves it,
a certificate request sent at enrollment, and the certificate the control plane signed."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from models.files import atomic_write_bytes

CLIENT_KEY_FILE = "mqtt-client.key"
CLIENT_CERT_FILE = "mqtt-client.crt"
REQUEST_NAME = "edgefleet-device"  # the control plane names the certificate after the device


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write_bytes(path, data, mode=mode)


def new_client_request(data_dir: Path) -> str:
    """Make a fresh key (kept 0600 in `data_dir`) and return a certificate request for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(data_dir / CLIENT_KEY_FILE, key_pem, 0o600)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REQUEST_NAME)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def save_client_certificate(data_dir: Path, pem: str) -> Path:
    """Store the certificate the control plane issued next to its key."""
    path = data_dir / CLIENT_CERT_FILE
    _write(path, pem.encode(), 0o644)
    return path


def client_certificate_files(data_dir: Path) -> tuple[str, str] | None:
    """(certificate, key) paths when this device has a client certificate, else None."""
    cert, key = data_dir / CLIENT_CERT_FILE, data_dir / CLIENT_KEY_FILE
    return (str(cert), str(key)) if cert.is_file() and key.is_file() else None
