"""`edgefleet-cp rollouts ...`: create, list, show, pause, resume, abort, rollback."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from controlplane.core.config import Settings
from controlplane.core.db import migrated_session
from controlplane.db_models import as_utc, parse_labels
from controlplane.enrollment import artifacts_url
from controlplane.errors import CliError
from controlplane.rollouts import service
from controlplane.rollouts.models import RolloutCreate
from controlplane.rollouts.strategy import Selector, Strategy, Wave


def _labels(text: str) -> dict[str, str]:
    try:
        return parse_labels(text)
    except ValueError as exc:
        raise CliError(f"--labels: {exc}") from exc


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def cmd_create(settings: Settings, args: argparse.Namespace) -> None:
    """Create a rollout."""
    try:
        strategy = Strategy(
            waves=[Wave.parse(w) for w in _list(args.waves)],
            success_threshold=args.success_threshold, failure_threshold=args.failure_threshold,
            require_approval=args.require_approval, device_timeout_s=args.device_timeout,
            soak_s=args.soak,
            start_at=as_utc(datetime.fromisoformat(args.start_at)) if args.start_at else None,
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    selector = Selector(labels=_labels(args.labels), device_classes=_list(args.device_class),
                        device_ids=_list(args.devices))  # fmt: skip
    if bool(args.model) == bool(args.agent):
        raise CliError("give a model (name:version) or --agent VERSION")
    spec = RolloutCreate(model=args.model or "", agent=args.agent, selector=selector,
                         strategy=strategy)  # fmt: skip
    with migrated_session(settings.database_url) as session:
        url = artifacts_url(settings)
        rollout = service.create_rollout(session, spec=spec, artifacts_url=url, created_by="cli",
                                         settings=settings)  # fmt: skip
        print(rollout.id)


def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    """List rollouts."""
    with migrated_session(settings.database_url) as session:
        rows = [service.to_public(session, r) for r in service.list_rollouts(session)]
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    print(f"{'ID':<16} {'MODEL':<24} {'STATUS':<17} {'WAVE':>4}  COUNTS")
    for r in rows:
        counts = " ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
        print(f"{r.id:<16} {r.model:<24} {r.status:<17} {r.current_wave:>4}  {counts}")


def cmd_show(settings: Settings, args: argparse.Namespace) -> None:
    """Show one rollout with per-wave progress and its devices."""
    with migrated_session(settings.database_url) as session:
        rollout = service.get_rollout(session, args.id)
        public = service.to_public(session, rollout)
        devices = [service.device_to_public(d) for d in service.devices_of(session, args.id)]
    if args.json:
        data = public.model_dump(mode="json")
        data["devices"] = [d.model_dump(mode="json") for d in devices]
        print(json.dumps(data, indent=2))
        return
    print(f"{public.id}  {public.model}  {public.status}  {public.reason}")
    for w in public.waves:
        marker = "*" if w.index == public.current_wave else " "
        print(f" {marker}wave {w.index} ({w.target}): {w.devices} devices, {w.succeeded} ok, "
              f"{w.failed} failed, {w.in_progress} in progress, {w.queued} queued")  # fmt: skip
    for d in devices:
        print(f"  {d.device_id:<20} wave {d.wave}  {d.state:<12} {d.sub_status:<14} {d.detail}")


def _action(action: str) -> Any:
    def run(settings: Settings, args: argparse.Namespace) -> None:
        with migrated_session(settings.database_url) as session:
            rollout = service.act(session, args.id, action, args.reason)
        print(f"{rollout.id} {rollout.status}")

    return run


def add_rollouts_parser(sub: Any) -> None:
    """Register `rollouts` and its subcommands on the top-level subparsers."""
    p = sub.add_parser("rollouts", help="model rollouts in waves with health gates")
    rsub = p.add_subparsers(dest="rollouts_command", required=True, metavar="COMMAND")
    c = rsub.add_parser("create", help="roll a registered model version out")
    c.add_argument("model", nargs="?", default="",
                   help="name:version from `edgefleet-cp models`")  # fmt: skip
    c.add_argument("--agent", default="", metavar="VERSION",
                   help="roll this agent release out instead of a model")  # fmt: skip
    c.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="judge each device's telemetry this long after its switch")  # fmt: skip
    c.add_argument("--waves", default="100%", help="cumulative waves, e.g. 1%%,10%%,50%%,100%% "
                   "or a canary count: 5,100%%")  # fmt: skip
    c.add_argument("--labels", default="", help="only devices with these labels: k=v,k2=v2")
    c.add_argument("--device-class", default="", help="only these device classes (comma list)")
    c.add_argument("--devices", default="", help="only these device ids (comma list)")
    c.add_argument("--success-threshold", type=float, default=1.0,
                   help="share of a wave that must succeed to advance (0-1)")  # fmt: skip
    c.add_argument("--failure-threshold", type=float, default=0.2,
                   help="share of dispatched devices failing that aborts (0-1)")  # fmt: skip
    c.add_argument("--require-approval", action="store_true",
                   help="wait for `rollouts resume` after each wave")  # fmt: skip
    c.add_argument("--device-timeout", type=float, default=900.0, help="seconds per device")
    c.add_argument("--start-at", default="", help="ISO time to start (default now)")
    c.set_defaults(func=cmd_create)
    ls = rsub.add_parser("list", help="list rollouts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    s = rsub.add_parser("show", help="one rollout with its waves and devices")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    for action in ("pause", "resume", "abort", "rollback"):
        a = rsub.add_parser(action, help=f"{action} a rollout")
        a.add_argument("id")
        a.add_argument("--reason", default="")
        a.set_defaults(func=_action(action))
