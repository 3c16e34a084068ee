"""Secrets the control plane hands out: random, shown once, stored as sha256."""

from __future__ import annotations

import hashlib
import secrets

API_TOKEN_PREFIX = "efo_"  # operator API token
ENROLLMENT_TOKEN_PREFIX = "eft_"
ARTIFACT_TOKEN_PREFIX = "efa_"  # device artifact download token


def new_secret(prefix: str = "") -> str:
    """A 256-bit URL-safe random secret, with a prefix that says what it is."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The sha256 hex digest stored instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_device_id() -> str:
    """A device id that is also a valid MQTT username and topic level."""
    return "dev-" + secrets.token_hex(6)
