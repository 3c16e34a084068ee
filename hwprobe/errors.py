"""Errors raised by hwprobe."""

from __future__ import annotations


class ProbeError(Exception):
    """The probe cannot start at all (for example the root folder does not exist)."""
