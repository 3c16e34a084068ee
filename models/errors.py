"""The exceptions the models package raises; each carries a one-line `reason` for users."""

from __future__ import annotations


class ModelsError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerificationError(ModelsError):
    """A model directory or manifest failed its signature or file checks."""


class KeyFileError(ModelsError):
    """A signing or trusted key file could not be read or parsed."""


class StoreError(ModelsError):
    """The artifact store could not complete an operation (missing blob, disk full, bad ref)."""


class DownloadError(StoreError):
    """Fetching an artifact failed: network, HTTP status, size or sha256 mismatch.

    `transient` is true when the same request may succeed later (a dropped connection, a 5xx,
    a restarting server): callers that retry look at it instead of at the message.
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class GGUFFormatError(ModelsError):
    """A file's GGUF header, metadata or tensor infos are malformed, truncated or unsupported."""
