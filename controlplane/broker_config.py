"""`edgefleet-cp broker-config`: the shipped Mosquitto config, pointed at this deployment's
password, ACL and TLS files, written next to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from controlplane.broker_auth import write_atomic
from controlplane.broker_sync import write_broker_files
from controlplane.broker_tls import BrokerTlsFiles, load_or_create_ca, write_broker_tls
from controlplane.core.config import Settings

CONFIG_FILE = "edgefleet.conf"
TLS_KEYS = ("cafile", "certfile", "keyfile")
LOCAL_NAMES = ("localhost", "127.0.0.1")  # the broker host itself may dial the TLS listener


@dataclass(frozen=True)
class BrokerConfigFiles:
    """What broker-config wrote."""

    config: Path
    password_file: Path
    acl_file: Path
    tls: BrokerTlsFiles


def render_broker_config(template: str, values: Mapping[str, str | Path]) -> str:
    """The template with every `<key> <value>` line whose key is in `values` set to it."""
    lines = []
    for line in template.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        lines.append(f"{key} {values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


def listener_ports(config: str) -> list[int]:
    """The ports of the config's `listener` lines, in order."""
    lines = (line.split() for line in config.splitlines())
    return [int(words[1]) for words in lines if words[:1] == ["listener"]]


def relocate_listeners(
    config: str,
    *,
    ports: Mapping[int, int],
    host: str,
    replace: Mapping[str, str | None],
    extra: Sequence[str] = (),
) -> str:
    """The config run elsewhere (tests, the demo): each listener moved to `ports[port]` on `host`
    (dropped with its options when absent), each `replace` key's lines set to its value in place
    (None drops them), and `extra` global lines added before the first listener."""
    out: list[str] = []
    dropping = False
    for line in config.splitlines():
        words = line.split()
        key = words[0] if words and not words[0].startswith("#") else ""
        if key == "listener":
            if extra:
                out += extra
                extra = ()
            new_port = ports.get(int(words[1]))
            dropping = new_port is None
            if new_port is not None:
                out.append(f"listener {new_port} {host}")
        elif dropping and key:
            continue
        elif key in replace:
            if replace[key] is not None:
                out.append(f"{key} {replace[key]}")
        else:
            out.append(line)
    return "\n".join([*out, *extra]) + "\n"


def write_broker_config(
    session: Session,
    settings: Settings,
    *,
    out: Path,
    template: Path,
    hostnames: Sequence[str],
    client_certs: bool = False,
) -> BrokerConfigFiles:
    """Write edgefleet.conf, passwd, acl, ca.crt, server.crt and server.key into `out`.

    The CA is the one at settings.mqtt_ca_cert_file/ca_key_file (created there when absent); the
    broker's certificate is issued afresh for `hostnames` plus localhost. With `client_certs`
    the device listener also requires the client certificate devices get at enrollment.
    """
    settings = settings.model_copy(
        update={"broker_password_file": out / "passwd", "broker_acl_file": out / "acl"}
    )
    ca = load_or_create_ca(settings.mqtt_ca_cert_file, settings.mqtt_ca_key_file)
    tls = write_broker_tls(ca, out, [*hostnames, *LOCAL_NAMES])
    files = BrokerConfigFiles(
        config=out / CONFIG_FILE,
        password_file=settings.broker_password_file,
        acl_file=settings.broker_acl_file,
        tls=tls,
    )
    values: dict[str, str | Path] = {
        "require_certificate": "true" if client_certs else "false",
        "password_file": files.password_file,
        "acl_file": files.acl_file,
        "cafile": tls.ca_file,
        "certfile": tls.cert_file,
        "keyfile": tls.key_file,
    }
    write_atomic(files.config, render_broker_config(template.read_text(), values), mode=0o644)
    write_broker_files(session, settings)
    return files
