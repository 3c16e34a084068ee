"""Applying device events and retained states to rollout rows, a batch at a time.

These run wherever a device message arrives (any replica). A batch loads the rows it
touches with one query, changes them in memory (no autoflush between events) and is
written by one flush, so thousands of devices reporting at once cost a handful of queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from controlplane.db_models import as_utc
from controlplane.rollouts.desired import chunks
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.strategy import (
    DeviceRolloutState,
    RolloutStatus,
    event_applies,
    state_for_event,
)
from models.protocol import RolloutEvent

S = DeviceRolloutState
SOAKING = "soaking"  # active, and its telemetry is watched until the soak window ends
RECONCILE_AFTER_S = 10.0
_REVERTED = (RolloutStatus.ABORTED.value, RolloutStatus.ROLLED_BACK.value)
# A failed device's detail says why it failed; the revert's own steps must not overwrite it.
_FAILURES = frozenset({S.FAILED.value, S.TIMED_OUT.value, S.ROLLED_BACK.value})


def set_state(
    row: RolloutDevice, state: DeviceRolloutState, sub: str, detail: str, now: datetime
) -> None:
    """Move one device row to `state` with a sub-status and detail."""
    row.state, row.sub_status, row.detail, row.updated_at = state.value, sub[:32], detail, now


def apply_events(
    session: Session, events: Sequence[tuple[str, RolloutEvent]], now: datetime
) -> list[bool]:
    """Record device events in order (caller commits); per event, whether it applied."""
    keyed = [(d, e) for d, e in events if e.rollout_id is not None]
    rows = _rows(session, {(e.rollout_id or "", d) for d, e in keyed})
    rollouts = _rollouts(session, {e.rollout_id or "" for _, e in keyed})
    applied: list[bool] = []
    with session.no_autoflush:
        for device_id, event in events:
            row = rows.get((event.rollout_id or "", device_id))
            ok = row is not None and _apply(row, rollouts.get(row.rollout_id), event, now)
            if ok and row is not None:
                session.add(row)
            applied.append(ok)
    return applied


def _apply(row: RolloutDevice, rollout: Rollout | None, event: RolloutEvent, now: datetime) -> bool:
    if row.desired_version is None or event.desired_version != row.desired_version:
        return False  # an older desired version's event: ignore (at-least-once, reordering)
    if rollout is not None and rollout.status in _REVERTED:
        if row.state not in _FAILURES:  # a failed device keeps why it failed while it reverts
            row.sub_status = f"revert:{event.kind}"[:32]
            row.detail = event.detail or row.detail
    else:
        if not event_applies(DeviceRolloutState(row.state), event.kind):
            return False
        state, sub = state_for_event(event.kind)
        if state is S.SUCCEEDED and rollout is not None and _soaks(rollout):
            state, sub, row.activated_at = S.IN_PROGRESS, SOAKING, now  # the driver judges it
        set_state(row, state, sub, event.detail, now)
        if event.bytes_total:
            row.detail = event.detail or f"{event.bytes_done or 0}/{event.bytes_total} bytes"
    row.updated_at = now
    return True


def reconcile_states(
    session: Session, states: Sequence[tuple[str, dict[str, Any]]], now: datetime
) -> int:
    """Settle in-progress rows from devices' retained states when their events went missing.

    Once a device's state says it applied the desired version it was sent, the row is
    `succeeded` when the device serves the rollout's model and `failed` otherwise. Returns
    how many rows were settled (caller commits).
    """
    applied = {d: s for d, s in states if isinstance(s.get("desired_version"), int)}
    if not applied:
        return 0
    rows: list[RolloutDevice] = []
    for part in chunks(list(applied)):
        rows += session.exec(
            select(RolloutDevice)
            .where(col(RolloutDevice.device_id).in_(part))
            .where(RolloutDevice.state == S.IN_PROGRESS.value)
            .where(RolloutDevice.sub_status != SOAKING)
            .execution_options(populate_existing=True)
        ).all()
    rollouts = _rollouts(session, {r.rollout_id for r in rows})
    settled = 0
    for row in rows:
        state = applied[row.device_id]
        rollout = rollouts.get(row.rollout_id)
        if row.desired_version is None or state["desired_version"] < row.desired_version:
            continue
        if now - as_utc(row.updated_at) < timedelta(seconds=RECONCILE_AFTER_S) or rollout is None:
            continue  # its own events are probably still on the way
        active = state.get("active") if isinstance(state.get("active"), dict) else None
        serving = active and (active.get("name"), active.get("version")) == (
            rollout.model_name,
            rollout.model_version,
        )
        if rollout.kind == "agent":
            serving = state.get("agent_version") == rollout.model_version
        if serving and _soaks(rollout):
            set_state(row, S.IN_PROGRESS, SOAKING, "settled from the device's state", now)
            row.activated_at = now
        elif serving:
            set_state(row, S.SUCCEEDED, "active", "settled from the device's state", now)
        else:
            set_state(row, S.FAILED, "kept_previous", "device applied it but kept its model", now)
        session.add(row)
        settled += 1
    return settled


def _soaks(rollout: Rollout) -> bool:
    return float(rollout.strategy.get("soak_s") or 0) > 0


def _rows(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], RolloutDevice]:
    out: dict[tuple[str, str], RolloutDevice] = {}
    rollout_ids = list({r for r, _ in keys})
    for part in chunks(sorted({d for _, d in keys})):
        found = session.exec(
            select(RolloutDevice)
            .where(col(RolloutDevice.device_id).in_(part))
            .where(col(RolloutDevice.rollout_id).in_(rollout_ids))
            .execution_options(populate_existing=True)
        )
        out.update(((r.rollout_id, r.device_id), r) for r in found)
    return out


def _rollouts(session: Session, ids: set[str]) -> dict[str, Rollout]:
    if not ids:
        return {}
    found = session.exec(select(Rollout).where(col(Rollout.id).in_(list(ids))))
    return {r.id: r for r in found}
