"""`edgefleet-cp rollouts ...` over the API: create, list, show, approve, pause, resume, abort,
rollback."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from controlplane.console.output import add_output, client, columns, emit
from controlplane.db_models import parse_labels
from controlplane.errors import CliError
from controlplane.rollouts.strategy import Wave

ACTIONS = ("approve", "pause", "resume", "abort", "rollback")


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The `POST /rollouts` body the options describe (checked here for one-line errors)."""
    if bool(args.model) == bool(args.agent):
        raise CliError("give a model (name:version) or --agent VERSION")
    try:
        waves = [Wave.parse(w).model_dump(exclude_none=True) for w in _list(args.waves)]
        labels = parse_labels(args.labels)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    strategy: dict[str, Any] = {
        "waves": waves,
        "success_threshold": args.success_threshold,
        "failure_threshold": args.failure_threshold,
        "require_approval": args.require_approval,
        "device_timeout_s": args.device_timeout,
        "soak_s": args.soak,
    }
    if args.start_at:
        try:
            start = datetime.fromisoformat(args.start_at)
        except ValueError as exc:
            raise CliError(f"--start-at {args.start_at!r}: use e.g. 2026-12-01T02:00Z") from exc
        strategy["start_at"] = (
            start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        ).isoformat()
    target = {"agent": args.agent} if args.agent else {"model": args.model}
    selector = {
        "labels": labels,
        "device_classes": _list(args.device_class),
        "device_ids": _list(args.devices),
    }
    return {**target, "selector": selector, "strategy": strategy}


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    return columns(
        [
            (
                r["id"],
                r["model"],
                r["status"],
                r["current_wave"],
                " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())),
            )
            for r in rows
        ],
        ("ID", "MODEL", "STATUS", "WAVE", "COUNTS"),
    )


def _detail(r: dict[str, Any]) -> list[str]:
    lines = [f"{r['id']}  {r['model']}  {r['status']}  {r['reason']}".rstrip()]
    for w in r["waves"]:
        marker = "*" if w["index"] == r["current_wave"] else " "
        lines.append(
            f" {marker}wave {w['index']} ({w['target']}): {w['devices']} devices, "
            f"{w['succeeded']} ok, {w['failed']} failed, {w['in_progress']} in "
            f"progress, {w['queued']} queued"
        )
    for d in r.get("devices", []):
        lines.append(
            f"  {d['device_id']:<20} wave {d['wave']}  {d['state']:<12} "
            f"{d['sub_status']:<14} {d['detail']}".rstrip()
        )
    return lines


def cmd_create(_settings: Any, args: argparse.Namespace) -> None:
    body = create_body(args)
    with client(args) as api:
        created = api.call("POST", "/rollouts", json=body)
    emit(args, created, lambda r: [r["id"]])


def cmd_list(_settings: Any, args: argparse.Namespace) -> None:
    with client(args) as api:
        rows = api.call("GET", "/rollouts", params={"status": args.status} if args.status else None)
    emit(args, rows, _summary)


def cmd_show(_settings: Any, args: argparse.Namespace) -> None:
    with client(args) as api:
        shown = api.call("GET", f"/rollouts/{args.id}")
        shown["devices"] = api.call("GET", f"/rollouts/{args.id}/devices")
    emit(args, shown, _detail)


def _action(verb: str) -> Any:
    def run(_settings: Any, args: argparse.Namespace) -> None:
        with client(args) as api:
            if verb == "approve":  # approving is resuming a rollout that waits for approval
                status = api.call("GET", f"/rollouts/{args.id}")["status"]
                if status != "waiting_approval":
                    raise CliError(f"{args.id} is {status}; no wave waits for approval")
            body = {"reason": args.reason} if args.reason else None
            action = "resume" if verb == "approve" else verb
            done = api.call("POST", f"/rollouts/{args.id}/{action}", json=body)
        emit(args, done, lambda r: [f"{r['id']} {r['status']}"])

    return run


def add_rollouts_parser(sub: Any) -> None:
    """`rollouts` and its subcommands."""
    p = sub.add_parser("rollouts", help="model and agent rollouts in waves with health gates")
    rsub = p.add_subparsers(dest="rollouts_command", required=True, metavar="COMMAND")
    c = add_output(rsub.add_parser("create", help="roll a model version or agent release out"))
    c.add_argument("model", nargs="?", default="", help="name:version from `models list`")
    c.add_argument(
        "--agent",
        default="",
        metavar="VERSION",
        help="roll this agent release out instead of a model",
    )
    c.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="judge each device's telemetry this long after its switch",
    )
    c.add_argument(
        "--waves",
        default="100%",
        help="cumulative waves, e.g. 1%%,10%%,50%%,100%% or a canary count: 5,100%%",
    )
    c.add_argument("--labels", default="", help="only devices with these labels: k=v,k2=v2")
    c.add_argument("--device-class", default="", help="only these device classes (comma list)")
    c.add_argument("--devices", default="", help="only these device ids (comma list)")
    c.add_argument(
        "--success-threshold",
        type=float,
        default=1.0,
        help="share of a wave that must succeed to advance (0-1)",
    )
    c.add_argument(
        "--failure-threshold",
        type=float,
        default=0.2,
        help="share of dispatched devices failing that aborts (0-1)",
    )
    c.add_argument(
        "--require-approval",
        action="store_true",
        help="wait for `rollouts approve` after each wave",
    )
    c.add_argument("--device-timeout", type=float, default=900.0, help="seconds per device")
    c.add_argument(
        "--start-at",
        default="",
        help="RFC 3339 time to start, e.g. 2026-12-01T02:00:00Z (default now)",
    )
    c.set_defaults(func=cmd_create)
    ls = add_output(rsub.add_parser("list", help="list rollouts, newest first"))
    ls.add_argument("--status", default="", help="only rollouts in this status")
    ls.set_defaults(func=cmd_list)
    s = add_output(rsub.add_parser("show", help="one rollout with its waves and devices"))
    s.add_argument("id")
    s.set_defaults(func=cmd_show)
    for verb in ACTIONS:
        text = (
            "start the next wave of a rollout waiting for approval"
            if verb == "approve"
            else f"{verb} a rollout"
        )
        a = add_output(rsub.add_parser(verb, help=text))
        a.add_argument("id")
        a.add_argument("--reason", default="", help="recorded on the rollout")
        a.set_defaults(func=_action(verb))
