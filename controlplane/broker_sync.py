"""Keep Mosquitto's password and ACL files in step with the device registry, and derive the
control plane's own MQTT identity (client id, shared-subscription group) from its secret."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import threading

from sqlmodel import Session

from controlplane import crud
from controlplane.broker_auth import hash_password, reload_broker, write_auth_files
from controlplane.core.config import Settings
from controlplane.security import new_secret

_LOGGER = logging.getLogger(__name__)
_SYNC_LOCK = threading.Lock()  # one writer at a time within this process
_DERIVED_HEX = 16  # 64 bits: not guessable by a device, short enough to read in broker logs


def control_plane_mqtt_password(settings: Settings) -> str:
    """The control plane's own MQTT password: configured, or generated once into the data dir."""
    if settings.mqtt_cp_password is not None:
        return settings.mqtt_cp_password.get_secret_value()
    path = settings.data_dir / "mqtt-cp.password"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process wrote it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(new_secret())
    return path.read_text().strip()


def _derived_name(settings: Settings, purpose: str) -> str:
    secret = control_plane_mqtt_password(settings).encode()
    return hmac.new(secret, purpose.encode(), hashlib.sha256).hexdigest()[:_DERIVED_HEX]


def control_plane_client_id(settings: Settings) -> str:
    """The bridge's client id: configured, or per host and derived from the secret.

    Stable across restarts (the persistent session survives) and unguessable, so a device
    cannot take it over even on a listener that does not tie client ids to usernames.
    """
    if settings.mqtt_cp_client_id:
        return settings.mqtt_cp_client_id
    host = socket.gethostname()
    return f"edgefleet-cp-{host}-{_derived_name(settings, f'client-id:{host}')}"


def share_group(settings: Settings) -> str:
    """The shared-subscription group of every replica: `cp-<suffix derived from the secret>`.

    Mosquitto 2.0 never checks SUBSCRIBE against the ACL file, so a device can join a group
    it can name and swallow its share of the messages; it cannot name this one.
    """
    return f"cp-{_derived_name(settings, 'share-group')}"


def write_broker_files(session: Session, settings: Settings) -> None:
    """Write the password file (control plane user + every device not revoked) and the ACL."""
    entries = crud.broker_credentials(session)
    entries[settings.mqtt_cp_username] = hash_password(control_plane_mqtt_password(settings))
    write_auth_files(
        password_file=settings.broker_password_file,
        acl_file=settings.broker_acl_file,
        entries=entries,
        control_plane_user=settings.mqtt_cp_username,
    )


def sync_broker(session: Session, settings: Settings) -> bool:
    """Rewrite the broker files and SIGHUP the broker; False when no broker pid is configured."""
    with _SYNC_LOCK:
        write_broker_files(session, settings)
        reloaded = reload_broker(pid_file=settings.broker_pid_file, pid=settings.broker_pid)
    if not reloaded:
        _LOGGER.info(
            "broker files written to %s; no broker pid to reload", settings.broker_password_file
        )
    return reloaded
