"""Mosquitto password and ACL files for the fleet, written atomically, and the broker reload.

Each device authenticates with username = its device id; the ACL's one `pattern` line
confines it to `ef/v1/devices/<its id>/#`. The control plane's own user may use `ef/v1/#`.
Password hashes use Mosquitto 2's `$7$` format (PBKDF2-HMAC-SHA512), so no external tool
is needed to write the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path

from controlplane.errors import BrokerAuthError
from models.files import atomic_write_bytes

_LOGGER = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes by default
_SALT_BYTES = 12
_HASH_BYTES = 64
_USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
TOPIC_ROOT = "ef/v1"


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto `$7$iterations$salt$hash` entry for this password."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    salt_b64 = base64.b64encode(salt).decode()
    return f"$7${iterations}${salt_b64}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches a `$7$` entry."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3])
        expected = base64.b64decode(parts[4])
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)


def render_password_file(entries: Mapping[str, str]) -> str:
    """Password file text from username -> `$7$` hash; usernames must be topic-safe."""
    lines = []
    for username, encoded in sorted(entries.items()):
        if not _USERNAME.match(username):
            raise BrokerAuthError(f"broker username {username!r} is not allowed in a topic")
        lines.append(f"{username}:{encoded}\n")
    return "".join(lines)


def render_acl(control_plane_user: str) -> str:
    """ACL text: the control plane may use all of ef/v1/#, each device only its own subtree."""
    return (
        "# Written by the EdgeFleet control plane; edits are overwritten.\n"
        f"user {control_plane_user}\n"
        f"topic readwrite {TOPIC_ROOT}/#\n"
        "\n"
        "# Every user, devices included: its own subtree only (username = device id).\n"
        f"pattern readwrite {TOPIC_ROOT}/devices/%u/#\n"
    )


def write_atomic(path: Path, text: str, *, mode: int = 0o640) -> None:
    """Replace `path` with `text` so a reader sees the old or the new file, never half."""
    try:
        atomic_write_bytes(path, text.encode(), mode=mode)
    except OSError as exc:
        raise BrokerAuthError(
            f"cannot write {path}: {exc}; check the directory's permissions"
        ) from exc


def write_auth_files(
    *,
    password_file: Path,
    acl_file: Path,
    entries: Mapping[str, str],
    control_plane_user: str,
) -> None:
    """Write both files; `entries` maps every allowed username to its `$7$` hash."""
    write_atomic(password_file, render_password_file(entries))
    write_atomic(acl_file, render_acl(control_plane_user))


def reload_broker(*, pid_file: Path | None = None, pid: int | None = None) -> bool:
    """Send SIGHUP to the broker (pid given, or read from its pid file); False when none."""
    if pid is None and pid_file is not None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            _LOGGER.warning("broker pid file %s unreadable; broker not reloaded", pid_file)
            return False
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _LOGGER.warning("broker pid %s is not running; broker not reloaded", pid)
        return False
    except PermissionError as exc:
        raise BrokerAuthError(
            f"cannot signal broker pid {pid}: {exc}; run the control plane as the broker's user"
        ) from exc
    _LOGGER.info("reloaded broker pid %s", pid)
    return True
