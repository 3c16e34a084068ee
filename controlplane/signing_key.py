"""The control plane's manifest-signing identity: its key and the keys devices must trust."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.core.config import Settings
from models.keys import key_id, load_or_create_key, load_public_keys, public_key_b64


@dataclass(frozen=True)
class SigningIdentity:
    """The signing key plus the extra public keys accepted without re-signing."""

    private_key: Ed25519PrivateKey
    extra_trusted: tuple[Ed25519PublicKey, ...] = ()

    @property
    def public_key(self) -> str:
        """Base64 raw public key of the control plane."""
        return public_key_b64(self.private_key)

    @property
    def key_id(self) -> str:
        """16-hex-digit id of the control plane's key."""
        return key_id(self.private_key)

    @property
    def trusted(self) -> list[Ed25519PublicKey]:
        """Every key whose signatures the fleet accepts, the control plane's first."""
        return [self.private_key.public_key(), *self.extra_trusted]

    @property
    def trusted_public_keys(self) -> list[str]:
        """`trusted` in base64."""
        return [public_key_b64(k) for k in self.trusted]


def load_signing_identity(settings: Settings) -> SigningIdentity:
    """Load (or create on first start) the signing key and parse the extra trusted keys."""
    key = load_or_create_key(settings.signing_key_path)
    extra = tuple(load_public_keys(settings.trusted_keys)) if settings.trusted_keys else ()
    return SigningIdentity(private_key=key, extra_trusted=extra)
