"""`edgefleet-cp devices logs|settings` and `edgefleet-cp agent-releases import|list`."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlplane.agent_releases import import_release, list_releases
from controlplane.command_link import CommandLink, await_result
from controlplane.command_models import DeviceCommandCreate
from controlplane.commands import send_command
from controlplane.core.config import Settings
from controlplane.core.db import migrated_session
from controlplane.crud.commands import record_command_result
from controlplane.errors import CliError
from controlplane.rollouts import desired
from controlplane.signing_key import load_signing_identity
from models.protocol import AgentSettings

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """'10m' -> 600.0 seconds ('90', '30s', '2h', '1d' too)."""
    m = _SINCE.match(text)
    if m is None:
        raise CliError(f"--since {text!r}: use a duration like 90s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def cmd_logs(settings: Settings, args: argparse.Namespace) -> None:
    """Ask a device for its recent log lines and print them."""
    spec = DeviceCommandCreate(command="logs", args={
        "since_s": parse_since(args.since), "level": args.level, "max_bytes": args.max_bytes,
    })  # fmt: skip
    link = CommandLink(settings, args.device_id)
    try:
        with migrated_session(settings.database_url) as session:
            row = send_command(session, bridge=link, device_id=args.device_id, spec=spec,
                               created_by="cli")  # fmt: skip
            result = await_result(link, row.request_id, args.timeout)
            if result is None:
                later = f"GET /api/v1/commands/{row.request_id} shows it later"
                raise CliError(f"no answer from {args.device_id} within {args.timeout:g}s; is "
                               f"it online? {later}")  # fmt: skip
            record_command_result(session, device_id=args.device_id, result=result)
            session.commit()
    finally:
        link.close()
    if not result.ok:
        raise CliError(f"{args.device_id}: {result.error}")
    lines = result.result.get("lines")
    for line in lines if isinstance(lines, list) else []:
        print(line)
    if result.result.get("truncated"):
        print(f"(older lines left out: at most {args.max_bytes} bytes; use --since or --level)")


def cmd_settings(settings: Settings, args: argparse.Namespace) -> None:
    """Set (or with --clear, drop) the agent settings a device should run with."""
    values: dict[str, Any] = {
        "parallel": args.parallel, "keep_alive_s": args.keep_alive,
        "telemetry_interval_s": args.telemetry_interval, "log_level": args.log_level,
        "api_key_sha256": hashlib.sha256(args.api_key.encode()).hexdigest()
        if args.api_key else None,
    }  # fmt: skip
    try:
        wanted = None if args.clear else AgentSettings(**values)
    except ValidationError as exc:
        raise CliError(str(exc)) from exc
    with migrated_session(settings.database_url) as session:
        version = desired.set_settings(session, args.device_id, wanted)
        session.commit()
    shown = wanted.model_dump(exclude_none=True) if wanted else "local settings"
    print(f"{args.device_id}: desired v{version}: {json.dumps(shown)}")


def cmd_release_import(settings: Settings, args: argparse.Namespace) -> None:
    """Import a signed agent release directory."""
    version = import_release(settings, load_signing_identity(settings), Path(args.dir))
    print(f"imported agent release {version}; roll it out: edgefleet-cp rollouts create "
          f"--agent {version}")  # fmt: skip


def cmd_release_list(settings: Settings, args: argparse.Namespace) -> None:
    """List imported agent releases."""
    for release in list_releases(settings):
        size = sum(f.size for f in release.files)
        print(f"{release.version:<20} {len(release.files)} files  {size} bytes")


def add_device_parsers(dsub: Any) -> None:
    """`devices logs` and `devices settings` under the `devices` subparsers."""
    p = dsub.add_parser("logs", help="a device's recent log lines (over its command channel)")
    p.add_argument("device_id")
    p.add_argument("--since", default="10m", help="how far back: 90s, 10m, 2h (default 10m)")
    p.add_argument("--level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--max-bytes", type=int, default=48 * 1024, help="at most this much text")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_logs)
    p = dsub.add_parser("settings", help="agent settings the device applies without a restart")
    p.add_argument("device_id")
    p.add_argument("--parallel", type=int, help="request slots (takes effect at restart)")
    p.add_argument("--keep-alive", type=float, help="seconds idle before unload; -1 never")
    p.add_argument("--telemetry-interval", type=float, help="seconds between telemetry batches")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--api-key", help="new REST API key (only its SHA-256 is sent)")
    p.add_argument("--clear", action="store_true", help="back to the device's own settings")
    p.set_defaults(func=cmd_settings)


def add_release_parsers(sub: Any) -> None:
    """`agent-releases import DIR` and `agent-releases list`."""
    p = sub.add_parser("agent-releases", help="signed agent releases for self-update rollouts")
    rsub = p.add_subparsers(dest="releases_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("import", help="import a release directory (release.json, .sig, wheels)")
    p.add_argument("dir")
    p.set_defaults(func=cmd_release_import)
    p = rsub.add_parser("list", help="imported releases")
    p.set_defaults(func=cmd_release_list)
