"""`edgefleet-cp`: run and administer the control plane (settings come from EDGEFLEET_CP_*)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import get_args

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from controlplane import crud, db_models
from controlplane.broker_config import write_broker_config
from controlplane.command_link import CommandLink, await_result
from controlplane.command_models import CommandName, DeviceCommandCreate
from controlplane.commands import send_command
from controlplane.core.config import Settings
from controlplane.core.db import check_database, migrate, migrated_session
from controlplane.crud.commands import command_to_public, record_command_result
from controlplane.db_models import Role
from controlplane.errors import CliError, ControlPlaneError
from controlplane.fleet.cli import add_device_parsers, add_release_parsers
from controlplane.registry import import_model
from controlplane.rollouts.cli import add_rollouts_parser
from controlplane.signing_key import load_signing_identity

SHIPPED_BROKER_CONFIG = (
    Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "edgefleet.conf"
)
_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """`90`, `30m`, `1h`, `7d` -> timedelta."""
    match = _TTL.match(text.strip())
    if match is None:
        raise CliError(f"--ttl {text!r}: use a number with s, m, h or d (e.g. 1h)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_labels(text: str) -> dict[str, str]:
    """`--labels k=v,k2=v2` -> dict; CliError when malformed."""
    try:
        return db_models.parse_labels(text)
    except ValueError as exc:
        raise CliError(f"--labels: {exc}") from exc


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from controlplane.main import create_app

    check_database(settings.database_url)  # one line now, not a traceback from the lifespan
    host, port = args.host or settings.host, args.port or settings.port
    settings = settings.model_copy(update={"host": host, "port": port})
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    migrate(settings.database_url)
    print(f"database at the latest schema: {settings.database_url.split('@')[-1]}")


def parse_expiry(text: str) -> timedelta | None:
    """`--expires 90d` -> timedelta; `never` -> None."""
    if text.strip().lower() == "never":
        return None
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise CliError(f"--expires {text!r}: use e.g. 90d, 12h or never")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def cmd_create_admin_token(settings: Settings, args: argparse.Namespace) -> None:
    expires_in = parse_expiry(args.expires)
    with migrated_session(settings.database_url) as session:
        token, secret = crud.create_api_token(
            session, name=args.name, role=Role(args.role), expires_in=expires_in
        )
    print(secret)
    until = "never expires"
    if token.expires_at is not None:
        until = f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC"
    print(f"{args.role} token {args.name!r} created ({until}); it is shown only now",
          file=sys.stderr)


def cmd_enroll_token(settings: Settings, args: argparse.Namespace) -> None:
    ttl = parse_ttl(args.ttl)
    if ttl > settings.enrollment_ttl_max:
        raise CliError(f"--ttl {args.ttl} is longer than {settings.enrollment_ttl_max}")
    with migrated_session(settings.database_url) as session:
        token, secret = crud.create_enrollment_token(
            session, labels=parse_labels(args.labels), ttl=ttl, created_by="cli"
        )
    print(secret)
    print(f"one-time enrollment token, expires {token.expires_at:%Y-%m-%d %H:%M} UTC",
          file=sys.stderr)


def cmd_devices(settings: Settings, args: argparse.Namespace) -> None:
    with migrated_session(settings.database_url) as session:
        public = crud.list_public_devices(session)
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in public], indent=2))
        return
    print(f"{'ID':<18} {'NAME':<20} {'CLASS':<14} {'ONLINE':<7} {'MODEL':<24} LABELS")
    for d in public:
        state = "revoked" if d.revoked else ("yes" if d.online else "no")
        tags = ",".join(f"{k}={v}" for k, v in sorted(d.labels.items()))
        print(f"{d.id:<18} {d.name[:20]:<20} {d.device_class[:14]:<14} {state:<7} "
              f"{(d.active_model or '-')[:24]:<24} {tags}")


def cmd_device_command(settings: Settings, args: argparse.Namespace) -> None:
    try:
        spec = DeviceCommandCreate(command=args.name, args=json.loads(args.args))
    except ValueError as exc:
        raise CliError(f"--args: {exc}") from exc
    link = CommandLink(settings, args.device_id)
    try:
        with migrated_session(settings.database_url) as session:
            row = send_command(session, bridge=link, device_id=args.device_id, spec=spec,
                               created_by="cli")  # fmt: skip
            if not args.wait:
                print(row.request_id)
                return
            result = await_result(link, row.request_id, args.timeout)
            if result is None:
                raise CliError(f"no answer to {row.request_id} within {args.timeout:g}s; is the "
                               "device online? GET /api/v1/commands/ID shows it later")  # fmt: skip
            record_command_result(session, device_id=args.device_id, result=result)
            session.commit()
            session.refresh(row)
            print(command_to_public(row).model_dump_json(indent=2))
    finally:
        link.close()
    if not result.ok:
        raise SystemExit(1)


def cmd_models_import(settings: Settings, args: argparse.Namespace) -> None:
    with migrated_session(settings.database_url) as session:
        manifest, row = import_model(
            session, settings=settings, signing=load_signing_identity(settings),
            model_dir=Path(args.dir), resign=args.resign,
        )
    print(f"imported {manifest.ref} ({row.size_bytes} bytes, signed by key {row.key_id})")


def cmd_broker_config(settings: Settings, args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    template = Path(args.template) if args.template else SHIPPED_BROKER_CONFIG
    if not template.is_file():
        raise CliError(f"broker config template {template} not found; pass --template")
    hostnames = args.hostname or [settings.mqtt_host]
    with migrated_session(settings.database_url) as session:
        files = write_broker_config(
            session, settings, out=out, template=template, hostnames=hostnames,
            client_certs=args.client_certs,
        )  # fmt: skip
    print(f"wrote {files.config}, passwd, acl and the TLS listener's certificate for "
          f"{', '.join(hostnames)} (CA {settings.ca_cert_file}); point the control plane at them "
          f"with EDGEFLEET_CP_BROKER_PASSWORD_FILE={files.password_file} "
          f"EDGEFLEET_CP_BROKER_ACL_FILE={files.acl_file} "
          "EDGEFLEET_CP_BROKER_PID_FILE=<mosquitto's pid_file>, and send devices to the TLS "
          "listener: EDGEFLEET_CP_MQTT_TLS=1 EDGEFLEET_CP_MQTT_PORT=8883 "
          "EDGEFLEET_CP_MQTT_CP_URL=mqtt://127.0.0.1:1883")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand with its help)."""
    parser = argparse.ArgumentParser(
        prog="edgefleet-cp",
        description="EdgeFleet control plane. Configure with EDGEFLEET_CP_* environment "
        "variables (e.g. EDGEFLEET_CP_DATABASE_URL, EDGEFLEET_CP_DATA_DIR); "
        "see docs/controlplane.md.",
    )
    parser.add_argument("--data-dir", help="override EDGEFLEET_CP_DATA_DIR")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the API server")
    p.add_argument("--host", help="bind address (default EDGEFLEET_CP_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default EDGEFLEET_CP_PORT or 8080)")
    p.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)
    p = sub.add_parser("create-admin-token", help="create an operator token (printed once)")
    p.add_argument("--name", default="admin", help="a name to recognise the token by")
    p.add_argument("--role", default="admin", choices=[r.value for r in Role])
    p.add_argument("--expires", default=f"{db_models.DEFAULT_TOKEN_DAYS}d",
                   help="lifetime: 12h, 90d, or never "
                   f"(default {db_models.DEFAULT_TOKEN_DAYS}d)")
    p.set_defaults(func=cmd_create_admin_token)
    p = sub.add_parser("enroll-token", help="create a one-time device enrollment token")
    p.add_argument("--labels", default="", help="labels the device gets, e.g. site=lab,rack=3")
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d (default 1h)")
    p.set_defaults(func=cmd_enroll_token)
    p = sub.add_parser("devices", help="list enrolled devices, or send one a command")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_devices)
    dsub = p.add_subparsers(dest="devices_command", metavar="COMMAND")
    add_device_parsers(dsub)
    p = dsub.add_parser("command", help="send a device a command and print its request id")
    p.add_argument("device_id", help="the device, e.g. dev-5c1e0a9b2f4d")
    p.add_argument("name", choices=get_args(CommandName), help="what the device should do")
    p.add_argument("--args", default="{}", help='JSON arguments, e.g. \'{"tokens": 64}\'')
    p.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    p.set_defaults(func=cmd_device_command)
    p = sub.add_parser("models", help="model registry")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    p = msub.add_parser("import", help="import a signed model directory")
    p.add_argument("dir", help="model directory with manifest.json and manifest.sig")
    p.add_argument("--resign", action="store_true",
                   help="sign the verified manifest with the control plane's key")
    p.set_defaults(func=cmd_models_import)
    p = sub.add_parser("broker-config", help="write Mosquitto config, password and ACL files")
    p.add_argument("--out", required=True, help="directory to write edgefleet.conf, passwd, acl")
    p.add_argument("--template", help="config to start from (default: the shipped one)")
    p.add_argument("--hostname", action="append",
                   help="a name or address devices dial the broker by, for its TLS certificate "
                   "(repeatable; default EDGEFLEET_CP_MQTT_HOST)")
    p.add_argument("--client-certs", action="store_true",
                   help="devices must also present the TLS client certificate they got at "
                   "enrollment (devices enrolled before have none: enroll them again)")
    p.set_defaults(func=cmd_broker_config)
    add_rollouts_parser(sub)
    add_release_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `edgefleet-cp`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
        args.func(settings, args)
    except ControlPlaneError as exc:
        print(f"edgefleet-cp: {exc.message}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"edgefleet-cp: invalid EDGEFLEET_CP_* setting: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = " ".join((str(orig) if orig is not None else str(exc).splitlines()[0]).split())
        print(
            f"edgefleet-cp: database error: {detail}; check EDGEFLEET_CP_DATABASE_URL "
            "and that the database is reachable",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
