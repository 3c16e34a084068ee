"""Register the console's commands: login, contexts, and the API-backed operator commands."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.console.client import ApiClient
from controlplane.console.context import (
    Context,
    context_file,
    forget_context,
    read_contexts,
    save_context,
    use_context,
)
from controlplane.console.devices import add_devices_parser
from controlplane.console.output import columns
from controlplane.console.registry import add_registry_parsers
from controlplane.console.rollouts import add_rollouts_parser
from controlplane.errors import CliError


def cmd_login(_settings: Any, args: argparse.Namespace) -> None:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{args.url!r}: give the control plane's URL, e.g. https://cp.example:8080")
    token = args.token or input("operator token: ").strip()
    context = Context(args.name or "default", url, token)
    with ApiClient(context) as api:
        me = api.call("GET", "/me")
    path = save_context(context)
    print(
        f"logged in to {url} as {me['name']} ({me['role']}); context {context.name!r} "
        f"saved in {path}"
    )


def cmd_logout(_settings: Any, args: argparse.Namespace) -> None:
    name = args.name or read_contexts().get("current") or ""
    if not name or not forget_context(name):
        raise CliError(f"no context {name!r} to forget")
    print(f"context {name!r} forgotten")


def cmd_contexts(_settings: Any, args: argparse.Namespace) -> None:
    if args.use:
        use_context(args.use)
    data = read_contexts()
    rows = [
        ("*" if n == data.get("current") else "", n, c["url"])
        for n, c in sorted(data["contexts"].items())
    ]
    for line in columns(rows, ("", "NAME", "URL")):
        print(line)
    print(f"({context_file()})")


def add_console_parsers(sub: Any) -> dict[str, Any]:
    """Every console command on the top-level subparsers; the command groups' subparsers."""
    p = sub.add_parser(
        "login",
        help="check a token against a control plane and save it as a context (file mode 0600)",
    )
    p.add_argument("url", help="the control plane, e.g. https://cp.example.com:8080")
    p.add_argument("--token", default="", help="operator token (asked for when not given)")
    p.add_argument("--name", default="", help="context name (default: default)")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="forget a context's token")
    p.add_argument("name", nargs="?", default="", help="the context (default: the current one)")
    p.set_defaults(func=cmd_logout)
    p = sub.add_parser("contexts", help="list saved contexts, or switch with --use NAME")
    p.add_argument("--use", default="", metavar="NAME", help="make NAME the current context")
    p.set_defaults(func=cmd_contexts)
    devices = add_devices_parser(sub)
    add_rollouts_parser(sub)
    add_registry_parsers(sub)
    return {"devices": devices}
