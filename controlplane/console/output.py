"""How console commands print: a table for people, `--output json` for scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.console.client import ApiClient
from controlplane.console.context import current_context


def add_output(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`-o/--output table|json` (and the older `--json`) on a command."""
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json, the API's answer as is",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", help=argparse.SUPPRESS
    )
    return parser


def client(args: argparse.Namespace) -> ApiClient:
    """A client for the context the command runs against."""
    return ApiClient(current_context(getattr(args, "context", None)))


def emit(args: argparse.Namespace, data: Any, table: Callable[[Any], Sequence[str]]) -> None:
    """Print `data` as JSON or as the lines `table` makes of it."""
    if getattr(args, "output", "table") == "json":
        print(json.dumps(data, indent=2))
        return
    for line in table(data):
        print(line)


def emit_list(
    args: argparse.Namespace,
    path: str,
    row: Callable[[dict[str, Any]], Sequence[Any]],
    header: Sequence[str],
) -> None:
    """GET a list from the API; print it as JSON, or as a table of one `row` per item."""
    with client(args) as api:
        items = api.call("GET", path)
    emit(args, items, lambda xs: columns([row(x) for x in xs], header))


def given(**values: Any) -> dict[str, Any]:
    """The query parameters that have a value (options left empty are not sent)."""
    return {k: v for k, v in values.items() if v}


def columns(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    """Rows as aligned columns under a header."""
    cells = [
        [str(c) for c in header],
        *[[("-" if c in (None, "") else str(c)) for c in r] for r in rows],
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def labels_text(labels: dict[str, str]) -> str:
    """`k=v,k2=v2` sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
