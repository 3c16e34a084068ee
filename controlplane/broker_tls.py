"""The fleet's private CA and the broker's TLS certificate (devices trust only this CA).

`edgefleet-cp broker-config` creates the CA once (or uses the operator's CA certificate and
key at the configured paths), issues the broker a server certificate for the names devices
dial, and writes both next to the broker config. Enrollment hands the CA certificate (PEM) to
every device, so `mqtts://` needs no public CA and no manual copying, and signs the client
certificate request the device made (its private key never leaves the device).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.broker_auth import write_atomic
from controlplane.errors import BrokerTlsError
from models.protocol import check_csr

_LOGGER = logging.getLogger(__name__)

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=825)  # what browsers and most TLS stacks still accept
DEVICE_VALIDITY = timedelta(days=825)
CLOCK_SKEW = timedelta(minutes=5)  # devices whose clocks run a little behind still connect
CA_COMMON_NAME = "EdgeFleet MQTT CA"
CA_CERT_FILE = "ca.crt"
SERVER_CERT_FILE = "server.crt"
SERVER_KEY_FILE = "server.key"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> str:
        """The CA certificate as PEM text (what devices get)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class BrokerTlsFiles:
    """The three files a Mosquitto TLS listener needs (`cafile`, `certfile`, `keyfile`)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def create_ca(common_name: str = CA_COMMON_NAME) -> CertificateAuthority:
    """A new self-signed CA (EC P-256) that may sign server and device certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate=certificate, key=key)


def load_or_create_ca(cert_file: Path, key_file: Path) -> CertificateAuthority:
    """The CA at these paths (the operator's, or one made earlier), created when both are absent."""
    existing = load_ca(cert_file, key_file)
    if existing is not None:
        return existing
    ca = create_ca()
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(key_file, _key_pem(ca.key), mode=0o600)
    write_atomic(cert_file, ca.pem(), mode=0o644)
    _LOGGER.info("created the fleet's MQTT CA in %s", cert_file)
    return ca


def load_ca(cert_file: Path, key_file: Path) -> CertificateAuthority | None:
    """The CA at these paths, or None when neither file exists."""
    if not cert_file.exists() and not key_file.exists():
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BrokerTlsError(
            f"cannot load the MQTT CA from {cert_file} and {key_file}: {exc}; give both files "
            "(an unencrypted PEM key), or neither to let the control plane create one"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BrokerTlsError(f"the CA key {key_file} must be an EC key (e.g. P-256)")
    return CertificateAuthority(certificate=certificate, key=key)


def _subject_alternative_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hostnames if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_server_certificate(ca: CertificateAuthority, hostnames: Sequence[str]) -> tuple[str, str]:
    """A broker certificate for these DNS names and IP addresses: (certificate PEM, key PEM)."""
    names = _subject_alternative_names(hostnames)
    if not names:
        raise BrokerTlsError("the broker certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _issue(
        ca,
        hostnames[0],
        key.public_key(),
        SERVER_VALIDITY,
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.SubjectAlternativeName(names),
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)


def issue_device_certificate(ca: CertificateAuthority, csr_pem: str, device_id: str) -> str:
    """A TLS client certificate (PEM) for the request's key, named after the device.

    Only the key is taken from the request: the subject is the device id the control plane
    assigned, whatever the request asked for.
    """
    csr = x509.load_pem_x509_csr(check_csr(csr_pem).encode())
    certificate = _issue(
        ca, device_id, csr.public_key(), DEVICE_VALIDITY, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _issue(
    ca: CertificateAuthority,
    common_name: str,
    public_key: CertificatePublicKeyTypes,
    validity: timedelta,
    usage: x509.ObjectIdentifier,
    *extensions: x509.ExtensionType,
) -> x509.Certificate:
    """A leaf certificate signed by `ca`: one name, one key usage, never outliving the CA."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def write_broker_tls(
    ca: CertificateAuthority, out_dir: Path, hostnames: Sequence[str]
) -> BrokerTlsFiles:
    """Write ca.crt, a fresh server.crt and server.key (0640) for the broker into `out_dir`."""
    cert_pem, key_pem = issue_server_certificate(ca, hostnames)
    files = BrokerTlsFiles(
        ca_file=out_dir / CA_CERT_FILE,
        cert_file=out_dir / SERVER_CERT_FILE,
        key_file=out_dir / SERVER_KEY_FILE,
    )
    write_atomic(files.ca_file, ca.pem(), mode=0o644)
    write_atomic(files.cert_file, cert_pem, mode=0o644)
    write_atomic(files.key_file, key_pem, mode=0o640)
    return files


def read_ca_pem(cert_file: Path) -> str | None:
    """The CA certificate PEM devices should trust, or None when there is none at `cert_file`."""
    try:
        text = cert_file.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerTlsError(f"cannot read the MQTT CA certificate {cert_file}: {exc}") from exc
    if "BEGIN CERTIFICATE" not in text:
        raise BrokerTlsError(f"{cert_file} is not a PEM certificate")
    return text
