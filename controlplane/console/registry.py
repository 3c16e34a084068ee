"""`edgefleet-cp models|enroll-token|tokens|audit ...` over the API."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from controlplane.console.output import add_output, client, columns, emit, emit_list, given
from controlplane.db_models import DEFAULT_TOKEN_DAYS, Role, parse_labels
from controlplane.errors import CliError

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str, option: str) -> int:
    """`90`, `30m`, `1h`, `7d` -> seconds."""
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise CliError(f"{option} {text!r}: use a number with s, m, h or d (e.g. 1h)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def cmd_models_list(_settings: Any, args: argparse.Namespace) -> None:
    emit_list(
        args,
        "/models",
        lambda m: (m["name"], " ".join(m["versions"]), m["created_at"][:10]),
        ("NAME", "VERSIONS", "REGISTERED"),
    )


def cmd_models_import(_settings: Any, args: argparse.Namespace) -> None:
    body = {
        "path": str(Path(args.dir).resolve()) if args.local_path else args.dir,
        "resign": args.resign,
    }
    with client(args) as api:
        row = api.call("POST", "/models/import", json=body)
    emit(
        args,
        row,
        lambda r: [
            f"imported {r['name']}:{r['version']} ({r['size_bytes']} bytes, "
            f"signed by key {r['key_id']})"
        ],
    )


def cmd_enroll_token(_settings: Any, args: argparse.Namespace) -> None:
    try:
        labels = parse_labels(args.labels)
    except ValueError as exc:
        raise CliError(f"--labels: {exc}") from exc
    body = {"labels": labels, "ttl_seconds": seconds(args.ttl, "--ttl")}
    with client(args) as api:
        token = api.call("POST", "/enrollment-tokens", json=body)
    emit(args, token, lambda t: [t["token"]])
    if args.output == "table":
        print(
            f"one-time enrollment token, expires {token['expires_at'][:16]} UTC; on the device: "
            f"EDGEFLEET_AGENT_CONTROL_PLANE_URL={api.context.url} "
            f"EDGEFLEET_AGENT_ENROLLMENT_TOKEN={token['token']} edgefleet-agent serve",
            file=sys.stderr,
        )


def _token_row(t: dict[str, Any]) -> tuple[Any, ...]:
    return (
        t["id"],
        t["name"],
        t["role"],
        t["created_at"][:10],
        (t.get("expires_at") or "never")[:10],
        "revoked" if t.get("revoked_at") else "active",
    )


def cmd_tokens(_settings: Any, args: argparse.Namespace) -> None:
    emit_list(args, "/tokens", _token_row, ("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"))


def cmd_tokens_create(_settings: Any, args: argparse.Namespace) -> None:
    days = None if args.days == 0 else args.days
    with client(args) as api:
        made = api.call(
            "POST", "/tokens", json={"name": args.name, "role": args.role, "expires_in_days": days}
        )
    emit(args, made, lambda t: [t["token"]])


def cmd_tokens_revoke(_settings: Any, args: argparse.Namespace) -> None:
    with client(args) as api:
        emit(args, api.call("DELETE", f"/tokens/{args.id}"), lambda t: [f"{t['name']} revoked"])


def cmd_audit(_settings: Any, args: argparse.Namespace) -> None:
    params = given(limit=args.limit, before=args.before, actor=args.actor, action=args.action)
    with client(args) as api:
        page = api.call("GET", "/audit", params=params)
    emit(
        args,
        page,
        lambda p: (
            columns(
                [
                    (
                        e["at"][:19],
                        e["actor"],
                        e["source"],
                        e["action"],
                        e["target"],
                        f"{e['outcome']} {e['status']} {e['detail']}".strip(),
                        e["client"],
                    )
                    for e in p["items"]
                ],
                ("WHEN", "WHO", "VIA", "ACTION", "TARGET", "RESULT", "FROM"),
            )
            + ([f"older: --before {p['next_before']}"] if p["next_before"] else [])
        ),
    )


def add_registry_parsers(sub: Any) -> None:
    """`models`, `enroll-token`, `tokens` and `audit`."""
    p = sub.add_parser("models", help="model registry")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    add_output(msub.add_parser("list", help="models and their versions")).set_defaults(
        func=cmd_models_list
    )
    s = add_output(
        msub.add_parser(
            "import", help="import a signed model directory that is on the control plane host"
        )
    )
    s.add_argument("dir", help="model directory with manifest.json and manifest.sig")
    s.add_argument(
        "--resign",
        action="store_true",
        help="sign the verified manifest with the control plane's key",
    )
    s.add_argument(
        "--no-resolve",
        dest="local_path",
        action="store_false",
        help="send DIR as given (a path on the server) instead of made absolute here",
    )
    s.set_defaults(func=cmd_models_import)
    p = add_output(sub.add_parser("enroll-token", help="create a one-time device enrollment token"))
    p.add_argument("--labels", default="", help="labels the device gets, e.g. site=lab,rack=3")
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d (default 1h)")
    p.set_defaults(func=cmd_enroll_token)
    p = add_output(sub.add_parser("tokens", help="operator tokens (admin)"))
    p.set_defaults(func=cmd_tokens)
    tsub = p.add_subparsers(dest="tokens_command", metavar="COMMAND")
    add_output(tsub.add_parser("list", help="every token (the default)")).set_defaults(
        func=cmd_tokens
    )
    s = add_output(tsub.add_parser("create", help="a new token, printed once"))
    s.add_argument("name")
    s.add_argument("--role", default="viewer", choices=[r.value for r in Role])
    s.add_argument(
        "--days",
        type=int,
        default=DEFAULT_TOKEN_DAYS,
        help=f"days until it expires, 0 = never (default {DEFAULT_TOKEN_DAYS})",
    )
    s.set_defaults(func=cmd_tokens_create)
    s = add_output(tsub.add_parser("revoke", help="revoke a token at once"))
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_tokens_revoke)
    p = add_output(sub.add_parser("audit", help="who did what (admin)"))
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--before", type=int, default=0, help="entries older than this id")
    p.add_argument("--actor", default="", help="only this token name")
    p.add_argument("--action", default="", help="only this action, e.g. pause_rollout")
    p.set_defaults(func=cmd_audit)
