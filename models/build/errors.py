"""The error the build pipeline raises; it says which step failed and what to do."""

from __future__ import annotations

from models.errors import ModelsError


class BuildError(ModelsError):
    """A conversion step could not produce its artifact."""
