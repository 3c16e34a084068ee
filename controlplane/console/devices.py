"""`edgefleet-cp devices ...` over the API: list, show, drops, label (one or by selector),
revoke, command."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, get_args

from controlplane.command_models import CommandName
from controlplane.console.output import add_output, client, columns, emit, given, labels_text
from controlplane.db_models import parse_labels
from controlplane.errors import CliError

PAGE = 1000
POLL_S = 0.5


def _labels(text: str, option: str) -> dict[str, str]:
    try:
        return parse_labels(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from exc


def _rows(devices: list[dict[str, Any]]) -> list[str]:
    return columns(
        [
            (
                d["id"],
                d["name"],
                d["device_class"],
                "revoked" if d["revoked"] else "yes" if d["online"] else "no",
                d["active_model"],
                labels_text(d["labels"]),
            )
            for d in devices
        ],
        ("ID", "NAME", "CLASS", "ONLINE", "MODEL", "LABELS"),
    )


def all_devices(api: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of `GET /devices` with these filters."""
    out: list[dict[str, Any]] = []
    while True:
        page = api.call("GET", "/devices", params={**params, "limit": PAGE, "offset": len(out)})
        out += page
        if len(page) < PAGE:
            return out


def cmd_list(_settings: Any, args: argparse.Namespace) -> None:
    params = given(labels=args.labels, device_class=args.device_class, model=args.model)
    with client(args) as api:
        emit(args, all_devices(api, params), _rows)


def cmd_show(_settings: Any, args: argparse.Namespace) -> None:
    with client(args) as api:
        emit(args, api.call("GET", f"/devices/{args.device_id}"), lambda d: _rows([d]))


def cmd_drops(_settings: Any, args: argparse.Namespace) -> None:
    params = given(device_id=args.device_id, limit=args.limit)
    with client(args) as api:
        emit(
            args,
            api.call("GET", "/ingest/counters", params=params),
            lambda rows: columns(
                [(r["device_id"], r["counter"], r["count"], r["last_at"]) for r in rows],
                ("DEVICE", "REASON", "COUNT", "LAST"),
            ),
        )


def cmd_label(_settings: Any, args: argparse.Namespace) -> None:
    if "=" in args.device_id:  # `label --selector site=a ring=canary`: no id given
        args.labels, args.device_id = [args.device_id, *args.labels], ""
    add = _labels(",".join(args.labels), "labels")
    remove = [k.strip() for k in args.remove.split(",") if k.strip()]
    if not add and not remove:
        raise CliError("give labels to set (k=v) and/or --remove KEY,...")
    if bool(args.device_id) == bool(args.selector):
        raise CliError("give one device id, or --selector k=v for every device it matches")
    changed = []
    with client(args) as api:
        targets = (
            [api.call("GET", f"/devices/{args.device_id}")]
            if args.device_id
            else all_devices(api, {"labels": args.selector})
        )
        for device in targets:
            labels = {k: v for k, v in device["labels"].items() if k not in remove} | add
            changed.append(api.call("PATCH", f"/devices/{device['id']}", json={"labels": labels}))
    emit(args, changed, _rows)


def cmd_revoke(_settings: Any, args: argparse.Namespace) -> None:
    with client(args) as api:
        emit(
            args,
            api.call("POST", f"/devices/{args.device_id}/revoke"),
            lambda d: [f"{d['id']} revoked"],
        )


def wait_for_answer(api: Any, request_id: str, timeout: float, late: str) -> dict[str, Any]:
    """The command once the device has answered it; CliError(`late`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (shown := api.call("GET", f"/commands/{request_id}"))["status"] == "pending":
        if time.monotonic() > deadline:
            raise CliError(late)
        time.sleep(POLL_S)
    answered: dict[str, Any] = shown
    return answered


def cmd_command(_settings: Any, args: argparse.Namespace) -> None:
    try:
        body = {"command": args.name, "args": json.loads(args.args)}
    except ValueError as exc:
        raise CliError(f"--args: {exc}") from exc
    with client(args) as api:
        sent = api.call("POST", f"/devices/{args.device_id}/commands", json=body)
        if not args.wait:
            print(sent["request_id"])
            return
        shown = wait_for_answer(
            api,
            sent["request_id"],
            args.timeout,
            f"no answer to {sent['request_id']} within {args.timeout:g}s; is "
            "the device online? `edgefleet-cp devices command-status ID`",
        )
    print(json.dumps(shown, indent=2))
    if shown["status"] != "succeeded":
        raise SystemExit(1)


def add_devices_parser(sub: Any) -> Any:
    """`devices` (list) and its subcommands; the subparsers, for more."""
    p = add_output(sub.add_parser("devices", help="list devices; label, revoke or command them"))
    p.add_argument("--labels", default="", help="only devices with these labels: k=v,k2=v2")
    p.add_argument("--device-class", default="", help="only this hardware class")
    p.add_argument("--model", default="", help="only devices running name[:version]")
    p.set_defaults(func=cmd_list)
    dsub = p.add_subparsers(dest="devices_command", metavar="COMMAND")
    s = add_output(dsub.add_parser("list", help="list devices (the default)"))
    for flag in ("--labels", "--device-class", "--model"):
        s.add_argument(flag, default="")
    s.set_defaults(func=cmd_list)
    s = add_output(dsub.add_parser("show", help="one device"))
    s.add_argument("device_id")
    s.set_defaults(func=cmd_show)
    s = add_output(
        dsub.add_parser(
            "drops",
            help="messages the control plane dropped, by device and reason",
            description="What the MQTT ingest dropped, highest count first: invalid "
            "(failed validation), throttled (past the device's budget), future_samples "
            "(dated ahead of the control plane's clock), rejected (unknown or revoked "
            "device), quarantined (refused by the database). A device that keeps adding "
            "to these misbehaves.",
        )
    )
    s.add_argument("device_id", nargs="?", default="", help="only this device")
    s.add_argument("--limit", type=int, default=100, help="rows at most (100)")
    s.set_defaults(func=cmd_drops)
    s = add_output(dsub.add_parser("label", help="set or remove labels on one device or many"))
    s.add_argument("device_id", nargs="?", default="", help="the device (or use --selector)")
    s.add_argument("labels", nargs="*", default=[], help="labels to set: k=v ...")
    s.add_argument("--selector", default="", help="every device with these labels: k=v,...")
    s.add_argument("--remove", default="", help="label keys to remove: k,k2")
    s.set_defaults(func=cmd_label)
    s = add_output(dsub.add_parser("revoke", help="revoke a device's credentials"))
    s.add_argument("device_id")
    s.set_defaults(func=cmd_revoke)
    s = dsub.add_parser("command", help="send a device a command and print its request id")
    s.add_argument("device_id", help="the device, e.g. dev-5c1e0a9b2f4d")
    s.add_argument("name", choices=get_args(CommandName), help="what the device should do")
    s.add_argument("--args", default="{}", help="JSON arguments, e.g. '{\"tokens\": 64}'")
    s.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    s.set_defaults(func=cmd_command)
    return dsub
