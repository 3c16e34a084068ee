"""Reported device states folded into the ingest writer's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from controlplane import crud
from controlplane.db_models import Device
from controlplane.telemetry_store import to_utc
from models import protocol

ReportedState = tuple[str, protocol.DeviceState, datetime]  # device id, state, received at


def record_states(session: Session, states: list[ReportedState]) -> int:
    """Record states with one SELECT and one executemany UPDATE (no commit); returns how many
    were older than the stored state and skipped."""
    if not states:
        return 0
    stored = dict(
        session.execute(
            select(Device.id, Device.state).where(
                col(Device.id).in_([device_id for device_id, _s, _r in states])
            )
        ).all()
    )
    reports: list[crud.StateReport] = []
    stale = 0
    for device_id, state, received_at in states:
        if state.online and _is_older(state, stored.get(device_id) or {}):
            stale += 1
            continue
        # An offline state (the Last Will) was written at connect time: it must not move
        # last_seen forward.
        seen_at = received_at if state.online else min(received_at, to_utc(state.ts))
        reports.append(
            crud.StateReport(
                device_id=device_id,
                online=state.online,
                state=state.model_dump(mode="json"),
                seen_at=seen_at,
            )
        )
    crud.mark_device_states(session, reports=reports)
    return stale


def _is_older(state: protocol.DeviceState, stored: dict[str, Any]) -> bool:
    """True when a redelivered state is older than the stored one by both seq and time."""
    try:
        stored_seq = int(stored.get("seq", -1))
        stored_ts = to_utc(datetime.fromisoformat(str(stored["ts"])))
    except (KeyError, TypeError, ValueError):
        return False
    return state.seq < stored_seq and to_utc(state.ts) < stored_ts
