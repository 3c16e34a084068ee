"""Read files under a root folder, turning every failure into a warning instead of a crash."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

# proc and sysfs files are small; anything bigger is junk we refuse to slurp.
_MAX_BYTES = 1 << 20


class RootFS:
    """A root filesystem (``/`` or a fake root) plus the warnings met while reading it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """Record a warning for the profile."""
        _LOGGER.debug("hwprobe warning: %s", message)
        if message not in self.warnings:
            self.warnings.append(message)

    def path(self, rel: str) -> Path:
        """Absolute path of ``rel`` under the root."""
        return self.root / rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists (a dangling symlink counts)."""
        return os.path.lexists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory."""
        return self.path(rel).is_dir()

    def read_bytes(self, rel: str) -> bytes | None:
        """Bytes of a regular file; None when missing or unreadable (the latter warns)."""
        path = self.path(rel)
        try:
            info = path.stat()
            if stat.S_ISDIR(info.st_mode):
                self.warn(f"{rel}: is a directory, expected a file")
                return None
            if not stat.S_ISREG(info.st_mode):
                self.warn(f"{rel}: not a regular file")
                return None
            with path.open("rb") as handle:
                return handle.read(_MAX_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            self.warn(f"{rel}: permission denied")
        except OSError as exc:
            self.warn(f"{rel}: cannot read ({exc.strerror or exc})")
        return None

    def read_text(self, rel: str) -> str | None:
        """UTF-8 text of a file; None when missing, unreadable or not text (the latter warn)."""
        data = self.read_bytes(rel)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.warn(f"{rel}: not text (binary or corrupt content), ignored")
            return None
        if any(ch < " " and ch not in "\t\n\r\0" for ch in text):
            self.warn(f"{rel}: contains control characters (corrupt content), ignored")
            return None
        return text

    def read_value(self, rel: str) -> str | None:
        """First line of a one-value file (sysfs style), stripped of NULs and blanks."""
        text = self.read_text(rel)
        if text is None:
            return None
        lines = text.replace("\0", "\n").strip().splitlines()
        return lines[0].strip() if lines else None

    def read_hex(self, rel: str) -> int | None:
        """A sysfs hex number such as ``0x8086``; None (with a warning) when it is not one."""
        value = self.read_value(rel)
        if value is None:
            return None
        try:
            return int(value, 16)
        except ValueError:
            self.warn(f"{rel}: expected a hex number, found {value[:40]!r}")
            return None

    def list_dir(self, rel: str) -> list[str]:
        """Sorted entry names of a directory; empty when missing or unreadable."""
        path = self.path(rel)
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            self.warn(f"{rel}: cannot list ({exc.strerror or exc})")
            return []

    def link_name(self, rel: str) -> str | None:
        """Last path part of a symlink's target (sysfs ``driver`` links); None if no link."""
        try:
            target = os.readlink(self.path(rel))
        except OSError:
            return None
        return os.path.basename(target.rstrip("/")) or None
