"""`edgefleet-cp`: run and administer the control plane (settings come from EDGEFLEET_CP_*)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from controlplane import crud, db_models
from controlplane.broker_config import write_broker_config
from controlplane.console import add_console_parsers
from controlplane.core.config import Settings
from controlplane.core.db import check_database, migrate, migrated_session
from controlplane.db_models import Role
from controlplane.errors import CliError, ControlPlaneError
from controlplane.fleet.cli import add_device_parsers, add_release_parsers

SHIPPED_BROKER_CONFIG = (
    Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "edgefleet.conf"
)
SHUTDOWN_GRACE_S = 5
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
    update: dict[str, object] = {"host": host, "port": port}
    if "ingest_process" not in settings.model_fields_set:
        update["ingest_process"] = True  # the API keeps its GIL to itself (ingest_process.py)
    settings = settings.model_copy(update=update)
    app = create_app(settings)
    app.state.freeze_heap_after_start = True  # a long-lived server, not an app in a test
    # Live pages keep streams open; shutdown cancels what is left after this many seconds.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


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
    print(
        f"{args.role} token {args.name!r} created ({until}); it is shown only now", file=sys.stderr
    )


def cmd_broker_config(settings: Settings, args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    template = Path(args.template) if args.template else SHIPPED_BROKER_CONFIG
    if not template.is_file():
        raise CliError(f"broker config template {template} not found; pass --template")
    hostnames = args.hostname or [settings.mqtt_host]
    with migrated_session(settings.database_url) as session:
        files = write_broker_config(
            session,
            settings,
            out=out,
            template=template,
            hostnames=hostnames,
            client_certs=args.client_certs,
        )
    print(
        f"wrote {files.config}, passwd, acl and the TLS listener's certificate for "
        f"{', '.join(hostnames)} (CA {settings.mqtt_ca_cert_file}); point the control plane at "
        f"them with EDGEFLEET_CP_BROKER_PASSWORD_FILE={files.password_file} "
        f"EDGEFLEET_CP_BROKER_ACL_FILE={files.acl_file} "
        "EDGEFLEET_CP_BROKER_PID_FILE=<mosquitto's pid_file>, and send devices to the TLS "
        "listener: EDGEFLEET_CP_MQTT_TLS=1 EDGEFLEET_CP_MQTT_PORT=8883 "
        "EDGEFLEET_CP_MQTT_CP_URL=mqtt://127.0.0.1:1883"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand with its help)."""
    parser = argparse.ArgumentParser(
        prog="edgefleet-cp",
        description="EdgeFleet control plane. On the control plane host, serve, migrate, "
        "create-admin-token and broker-config use the EDGEFLEET_CP_* settings (e.g. "
        "EDGEFLEET_CP_DATABASE_URL, EDGEFLEET_CP_DATA_DIR). From anywhere, `login URL --token "
        "TOKEN` saves a context, and the operator commands (devices, rollouts, models, "
        "agent-releases import|list, enroll-token, tokens, audit) are clients of that control "
        "plane's API. See docs/controlplane.md.",
    )
    parser.add_argument("--context", help="the saved context to use (default: the current)")
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
    p.add_argument(
        "--expires",
        default=f"{db_models.DEFAULT_TOKEN_DAYS}d",
        help=f"lifetime: 12h, 90d, or never (default {db_models.DEFAULT_TOKEN_DAYS}d)",
    )
    p.set_defaults(func=cmd_create_admin_token)
    p = sub.add_parser("broker-config", help="write Mosquitto config, password and ACL files")
    p.add_argument("--out", required=True, help="directory to write edgefleet.conf, passwd, acl")
    p.add_argument("--template", help="config to start from (default: the shipped one)")
    p.add_argument(
        "--hostname",
        action="append",
        help="a name or address devices dial the broker by, for its TLS certificate "
        "(repeatable; default EDGEFLEET_CP_MQTT_HOST)",
    )
    p.add_argument(
        "--client-certs",
        action="store_true",
        help="devices must also present the TLS client certificate they got at "
        "enrollment (devices enrolled before have none: enroll them again)",
    )
    p.set_defaults(func=cmd_broker_config)
    console = add_console_parsers(sub)  # operator commands: HTTP clients of the API
    add_device_parsers(console["devices"])  # devices logs|settings
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
