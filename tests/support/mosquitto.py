"""A real Mosquitto broker for tests, configured from deploy/mosquitto/edgefleet.conf.

    from tests.support.mosquitto import MosquittoBroker, mosquitto_broker_fixture

    broker = MosquittoBroker(tmp_path)            # free ports, tmp password/acl/persistence
    broker.set_users({"edgefleet-cp": "pw"})      # or anonymous=True
    broker.start()
    ...  broker.reload(); broker.restart(); broker.stop()

The shipped config is used as is, except for the file paths and logging, and its listeners:
the loopback one (1883) moves to `broker.port`, the device one (8883: client id = username)
to `broker.device_port`, with TLS when `tls=` gives certificate files (plaintext otherwise).
A template with one listener serves both on `broker.port`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from controlplane.broker_auth import hash_password, render_acl, render_password_file
from controlplane.broker_config import TLS_KEYS, listener_ports, relocate_listeners
from controlplane.broker_tls import BrokerTlsFiles

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO_ROOT / "deploy" / "mosquitto" / "edgefleet.conf"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CONTROL_PLANE_USER = "edgefleet-cp"
START_TIMEOUT_S = 10.0
LOOPBACK_LISTENER = 1883  # the shipped config's listener ports
DEVICE_LISTENER = 8883
# Keys the helper sets itself; every other line of the shipped config is kept.
_OVERRIDDEN = {
    "listener",
    "port",
    "password_file",
    "acl_file",
    "persistence_location",
    "pid_file",
    "log_dest",
    "log_type",
    "user",
    "allow_anonymous",
}


def device_client(creds: Mapping[str, Any]) -> mqtt.Client:
    """A paho MQTT v5 client with an enrolled device's own credentials, not yet connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=creds["device_id"],
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(creds["mqtt"]["username"], creds["mqtt"]["password"])
    return client


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1 with its files under `workdir`."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        anonymous: bool = False,
        extra_config: str = "",
        template: Path = SHIPPED_CONFIG,
        tls: BrokerTlsFiles | None = None,
        client_certs: bool = False,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.device_port = free_port()
        self.tls = tls
        self.client_certs = client_certs  # the device listener requires one (with tls only)
        self.anonymous = anonymous
        self.extra_config = extra_config
        self.template = template
        self.config_file = workdir / "mosquitto.conf"
        self.password_file = workdir / "passwd"
        self.acl_file = workdir / "acl"
        self.pid_file = workdir / "mosquitto.pid"
        self.log_file = workdir / "mosquitto.log"
        self.persistence_dir = workdir / "persistence"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    def set_users(
        self, users: Mapping[str, str], *, control_plane_user: str = CONTROL_PLANE_USER
    ) -> None:
        """Write the password file (username -> plain password) and the fleet ACL."""
        entries = {name: hash_password(pw) for name, pw in users.items()}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(render_password_file(entries))
        self.acl_file.write_text(render_acl(control_plane_user))

    def write_config(self) -> Path:
        """Write mosquitto.conf: the shipped config with this broker's ports and paths."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text("")
        if not self.acl_file.exists():
            self.acl_file.write_text(render_acl(CONTROL_PLANE_USER))
        template = self.template.read_text()
        if DEVICE_LISTENER not in listener_ports(template):
            self.device_port = self.port
        tls = self.tls
        tls_files = (
            dict(zip(TLS_KEYS, (tls.ca_file, tls.cert_file, tls.key_file), strict=True))
            if tls
            else {}
        )
        extra = [
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            f"persistence_location {self.persistence_dir}/",
            f"pid_file {self.pid_file}",
            f"log_dest file {self.log_file}",
            "log_type all",
        ]
        if os.geteuid() == 0:
            extra.append("user root")  # keep access to the test's private tmp files
        text = relocate_listeners(
            template,
            ports={LOOPBACK_LISTENER: self.port, DEVICE_LISTENER: self.device_port},
            host=self.host,
            replace={
                **dict.fromkeys(_OVERRIDDEN - {"listener"}),
                **{key: str(tls_files[key]) if key in tls_files else None for key in TLS_KEYS},
                "require_certificate": "true" if tls and self.client_certs else None,
            },
            extra=extra,
        )
        if self.extra_config:
            text += self.extra_config + "\n"
        self.config_file.write_text(text)
        return self.config_file

    def start(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.pid is not None:
            return self
        self.write_config()
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}\n{self.log()}")
            try:
                for port in {self.port, self.device_port}:
                    with socket.create_connection((self.host, port), timeout=0.2):
                        pass
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def reload(self) -> None:
        """SIGHUP: re-read password and ACL files."""
        if self._process is None:
            raise RuntimeError("broker is not running")
        self._process.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # mosquitto applies the reload on its next loop iteration

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); persistence is saved on a clean stop."""
        proc, self._process = self._process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_file.read_text() if self.log_file.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto_broker_fixture(
    **kwargs: object,
) -> Callable[[Path], Iterator[MosquittoBroker]]:
    """A function-scoped pytest fixture factory: `broker = mosquitto_broker_fixture()`."""

    @pytest.fixture
    def _broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
        broker = MosquittoBroker(tmp_path / "mosquitto", **kwargs)  # type: ignore[arg-type]
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()

    return _broker
