"""`edgefleet-cp devices logs|settings` and `edgefleet-cp agent-releases build|import|list`.

All but `build` are clients of the API (the login context); `build` signs with the control
plane's own key, so it runs where that key is, like `create-admin-token`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlplane.console.devices import wait_for_answer
from controlplane.console.output import add_output, client, emit, emit_list
from controlplane.core.config import Settings
from controlplane.errors import CliError
from controlplane.signing_key import load_signing_identity
from models.agent_release import build_release
from models.protocol import AgentSettings

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """'10m' -> 600.0 seconds ('90', '30s', '2h', '1d' too)."""
    m = _SINCE.match(text)
    if m is None:
        raise CliError(f"--since {text!r}: use a duration like 90s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def cmd_logs(_settings: Any, args: argparse.Namespace) -> None:
    """Ask a device for its recent log lines (the `logs` command) and print them."""
    body = {
        "command": "logs",
        "args": {
            "since_s": parse_since(args.since),
            "level": args.level,
            "max_bytes": args.max_bytes,
        },
    }
    with client(args) as api:
        sent = api.call("POST", f"/devices/{args.device_id}/commands", json=body)
        shown = wait_for_answer(
            api,
            sent["request_id"],
            args.timeout,
            f"no answer from {args.device_id} within {args.timeout:g}s; is it online? "
            f"`edgefleet-cp devices command-status {sent['request_id']}` shows it later",
        )
    if shown["status"] != "succeeded":
        raise CliError(f"{args.device_id}: {shown.get('error') or shown['status']}")
    result = shown.get("result") or {}
    for line in result.get("lines") or []:
        print(line)
    if result.get("truncated"):
        print(f"(older lines left out: at most {args.max_bytes} bytes; use --since or --level)")


def cmd_settings(_settings: Any, args: argparse.Namespace) -> None:
    """Set (or with --clear, drop) the agent settings a device should run with."""
    digest = hashlib.sha256(args.api_key.encode()).hexdigest() if args.api_key else None
    values: dict[str, Any] = {
        "parallel": args.parallel,
        "keep_alive_s": args.keep_alive,
        "telemetry_interval_s": args.telemetry_interval,
        "log_level": args.log_level,
        "api_key_sha256": digest,
    }
    with client(args) as api:
        if args.clear:
            shown = api.call("DELETE", f"/devices/{args.device_id}/settings")
        elif all(v is None for v in values.values()):
            shown = api.call("GET", f"/devices/{args.device_id}/settings")
        else:
            try:
                wanted = AgentSettings(**values).model_dump(exclude_none=True)
            except ValidationError as exc:
                raise CliError(str(exc)) from exc
            shown = api.call("PUT", f"/devices/{args.device_id}/settings", json=wanted)
    emit(
        args,
        shown,
        lambda s: [
            f"{s['device_id']}: desired v{s['desired_version']}: {json.dumps(s['settings'])}",
            f"reported: {json.dumps(s.get('reported'))}",
            *([f"refused: {s['reported_error']}"] if s.get("reported_error") else []),
        ],
    )


def cmd_release_build(settings: Settings, args: argparse.Namespace) -> None:
    """Build a release of an agent source tree, signed with the control plane's key."""
    source = Path(args.source)
    if not (source / "agent" / "__init__.py").is_file():
        raise CliError(f"{source} has no agent/ package: give the repository root with --source")
    key = load_signing_identity(settings).private_key
    release = build_release(source, Path(args.out), args.version, key)
    print(
        f"built agent release {release.version} in {args.out} ({release.files[0].path}); "
        f"import it: edgefleet-cp agent-releases import {args.out}"
    )


def cmd_release_import(_settings: Any, args: argparse.Namespace) -> None:
    """Import a signed release directory that is on the control plane's host."""
    with client(args) as api:
        release = api.call(
            "POST", "/agent-releases/import", json={"path": str(Path(args.dir).resolve())}
        )
    emit(
        args,
        release,
        lambda r: [
            f"imported agent release {r['version']}; roll it out: edgefleet-cp rollouts create "
            f"--agent {r['version']}"
        ],
    )


def cmd_release_list(_settings: Any, args: argparse.Namespace) -> None:
    """List imported agent releases."""
    emit_list(
        args,
        "/agent-releases",
        lambda r: (r["version"], len(r["files"]), sum(f["size"] for f in r["files"])),
        ("VERSION", "FILES", "BYTES"),
    )


def add_device_parsers(dsub: Any) -> None:
    """`devices logs` and `devices settings` under the `devices` subparsers."""
    p = dsub.add_parser("logs", help="a device's recent log lines (over its command channel)")
    p.add_argument("device_id")
    p.add_argument("--since", default="10m", help="how far back: 90s, 10m, 2h (default 10m)")
    p.add_argument("--level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--max-bytes", type=int, default=48 * 1024, help="at most this much text")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_logs)
    p = add_output(
        dsub.add_parser(
            "settings", help="agent settings the device should run with (no options: show them)"
        )
    )
    p.add_argument("device_id")
    p.add_argument("--parallel", type=int, help="request slots (takes effect at restart)")
    p.add_argument("--keep-alive", type=float, help="seconds idle before unload; -1 never")
    p.add_argument("--telemetry-interval", type=float, help="seconds between telemetry batches")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--api-key", help="new REST API key (only its SHA-256 is sent)")
    p.add_argument("--clear", action="store_true", help="back to the device's own settings")
    p.set_defaults(func=cmd_settings)


def add_release_parsers(sub: Any) -> None:
    """`agent-releases build|import|list`."""
    p = sub.add_parser("agent-releases", help="signed agent releases for self-update rollouts")
    rsub = p.add_subparsers(dest="releases_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("build", help="build and sign a release of an agent source tree (local)")
    p.add_argument("version", help="the release's version, e.g. 1.2.0")
    p.add_argument("--out", required=True, help="directory to write the release into")
    p.add_argument("--source", default=".", help="repository root with agent/, models/, hwprobe/")
    p.set_defaults(func=cmd_release_build)
    p = add_output(
        rsub.add_parser(
            "import", help="import a release directory that is on the control plane's host"
        )
    )
    p.add_argument("dir")
    p.set_defaults(func=cmd_release_import)
    p = add_output(rsub.add_parser("list", help="imported releases"))
    p.set_defaults(func=cmd_release_list)
