"""One step of driving every active rollout, and applying device events and states.

`tick` runs only on the elected replica; `apply_event` and `reconcile_state` run wherever a
device message arrives. All of them are plain functions over a database session.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from controlplane.crud.devices import device_labels
from controlplane.db_models import Device, as_utc
from controlplane.rollouts import desired
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.strategy import (
    TERMINAL_STATES,
    DeviceRolloutState,
    RolloutStatus,
    WaveCounts,
    assign_waves,
    decide,
    event_applies,
    is_timed_out,
    state_for_event,
)
from models.protocol import DesiredModel, RolloutEvent

_LOGGER = logging.getLogger(__name__)

S = DeviceRolloutState
RECONCILE_AFTER_S = 10.0
DRIVEN = (RolloutStatus.SCHEDULED, RolloutStatus.RUNNING, RolloutStatus.PAUSED,
          RolloutStatus.WAITING_APPROVAL)  # fmt: skip


def tick(session: Session, now: datetime) -> None:
    """Advance every rollout that is not finished, one step each."""
    rollouts = session.exec(
        select(Rollout).where(col(Rollout.status).in_([s.value for s in DRIVEN]))
    ).all()
    for rollout in rollouts:
        try:
            _step(session, rollout, now)
            session.commit()
        except Exception:
            session.rollback()
            _LOGGER.exception("rollout %s: step failed; retrying next tick", rollout.id)


def _step(session: Session, rollout: Rollout, now: datetime) -> None:
    strategy = rollout.parsed_strategy()
    status = RolloutStatus(rollout.status)
    if status is RolloutStatus.SCHEDULED:
        if strategy.start_at is not None and as_utc(strategy.start_at) > now:
            return
        _start(session, rollout, now)
        status = RolloutStatus.RUNNING
    rows = list(session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)))
    _time_out(rows, now, strategy.device_timeout_s)
    if status is not RolloutStatus.RUNNING:
        return
    rows += _join_late(session, rollout, {r.device_id for r in rows}, now)
    for row in rows:
        if row.wave <= rollout.current_wave and row.state == S.QUEUED.value:
            _dispatch(session, rollout, row, now)
    waves: dict[int, list[DeviceRolloutState]] = defaultdict(list)
    for row in rows:
        waves[row.wave].append(DeviceRolloutState(row.state))
    counts = [WaveCounts.of(waves[i]) for i in range(len(strategy.waves))]
    dispatched = WaveCounts.of(
        DeviceRolloutState(r.state) for r in rows if r.wave <= rollout.current_wave
    )
    decision = decide(strategy, rollout.current_wave, counts, dispatched)
    if decision == "advance":
        rollout.current_wave += 1
        _LOGGER.info("rollout %s: wave %d starts", rollout.id, rollout.current_wave)
    elif decision == "await_approval":
        rollout.status = RolloutStatus.WAITING_APPROVAL.value
        rollout.reason = f"wave {rollout.current_wave} done; resume to start the next wave"
    elif decision == "pause":
        rollout.status = RolloutStatus.PAUSED.value
        rollout.reason = (
            f"wave {rollout.current_wave} finished below the success threshold "
            f"({strategy.success_threshold:.0%}); resume, abort or roll back"
        )
    elif decision == "abort":
        why = f"failures exceeded {strategy.failure_threshold:.0%} of dispatched devices"
        revert(session, rollout, rows, RolloutStatus.ABORTED, why, now)
    elif decision == "complete":
        rollout.status = RolloutStatus.SUCCEEDED.value
        rollout.finished_at = now
    session.add(rollout)


def _start(session: Session, rollout: Rollout, now: datetime) -> None:
    targets = matching_devices(session, rollout)
    strategy = rollout.parsed_strategy()
    for device_id, wave in assign_waves(rollout.id, targets, strategy.waves).items():
        session.add(RolloutDevice(rollout_id=rollout.id, device_id=device_id, wave=wave))
    rollout.status = RolloutStatus.RUNNING.value
    rollout.started_at = now
    _LOGGER.info("rollout %s started: %d devices", rollout.id, len(targets))


def _join_late(
    session: Session, rollout: Rollout, known: set[str], now: datetime
) -> list[RolloutDevice]:
    joined = [
        RolloutDevice(rollout_id=rollout.id, device_id=d, wave=rollout.current_wave, updated_at=now)
        for d in matching_devices(session, rollout)
        if d not in known
    ]
    session.add_all(joined)
    if joined:
        _LOGGER.info("rollout %s: %d devices joined", rollout.id, len(joined))
    return joined


def matching_devices(session: Session, rollout: Rollout) -> list[str]:
    """Ids of enrolled, not revoked devices the rollout's selector matches."""
    selector = rollout.parsed_selector()
    query = select(Device.id, Device.device_class).where(col(Device.revoked_at).is_(None))
    if selector.device_ids:
        query = query.where(col(Device.id).in_(selector.device_ids))
    rows = session.exec(query).all()
    labels = device_labels(session, device_ids=[r[0] for r in rows]) if selector.labels else {}
    return [d for d, cls in rows if selector.matches(d, labels.get(d, {}), cls)]


def _dispatch(session: Session, rollout: Rollout, row: RolloutDevice, now: datetime) -> None:
    for other in session.exec(
        select(RolloutDevice).where(
            RolloutDevice.device_id == row.device_id,
            RolloutDevice.rollout_id != rollout.id,
            col(RolloutDevice.state).in_([S.QUEUED.value, S.IN_PROGRESS.value]),
        )
    ):
        _set(other, S.CANCELED, "superseded", f"superseded by rollout {rollout.id}", now)
        session.add(other)
    previous = desired.models_of(desired.current(session, row.device_id))
    if not previous:
        device = session.get(Device, row.device_id)
        previous = _reported_model(rollout, device.active_model if device else None)
    target = DesiredModel(
        name=rollout.model_name, version=rollout.model_version,
        manifest_url=rollout.manifest_url, files_url=_files_url(rollout.manifest_url),
        rollout_id=rollout.id,
    )  # fmt: skip
    stored = desired.set_models(session, row.device_id, [target])
    row.previous_models = previous
    row.desired_version = stored.version
    row.dispatched_at = now
    _set(row, S.IN_PROGRESS, "dispatched", "", now)
    session.add(row)


def _reported_model(rollout: Rollout, active: str | None) -> list[dict[str, Any]]:
    """A desired entry for the model a device reports serving (registry URLs share a layout)."""
    if not active or ":" not in active:
        return []
    name, version = active.split(":", 1)
    suffix = f"/{rollout.model_name}/{rollout.model_version}/manifest.json"
    if not rollout.manifest_url.endswith(suffix):
        return []
    url = rollout.manifest_url[: -len(suffix)] + f"/{name}/{version}/manifest.json"
    model = DesiredModel(name=name, version=version, manifest_url=url, files_url=_files_url(url))
    return [model.model_dump(mode="json")]


def _files_url(manifest_url: str) -> str:
    """The registry serves a version's files under `.../{name}/{version}/files/`."""
    return manifest_url.rsplit("/", 1)[0] + "/files"


def _time_out(rows: list[RolloutDevice], now: datetime, timeout_s: float) -> None:
    for row in rows:
        dispatched = as_utc(row.dispatched_at) if row.dispatched_at else None
        if row.state == S.IN_PROGRESS.value and is_timed_out(dispatched, now, timeout_s):
            _set(row, S.TIMED_OUT, row.sub_status, f"no result within {timeout_s:g} s", now)


def revert(
    session: Session,
    rollout: Rollout,
    rows: list[RolloutDevice],
    status: RolloutStatus,
    reason: str,
    now: datetime,
) -> None:
    """Stop the rollout; queued devices are canceled, the others get their previous model."""
    rollout.status, rollout.reason, rollout.finished_at = status.value, reason, now
    reverted = 0
    for row in rows:
        if row.state == S.QUEUED.value:
            _set(row, S.CANCELED, "", reason, now)
        elif row.state != S.CANCELED.value and row.desired_version is not None:
            models = [DesiredModel.model_validate(m) for m in row.previous_models]
            for m in models:
                m.rollout_id = rollout.id
            stored = desired.set_models(session, row.device_id, models)
            row.desired_version = stored.version
            if row.state in (S.FAILED.value, S.TIMED_OUT.value, S.ROLLED_BACK.value):
                row.sub_status = "reverting"  # keep the device's own reason in `detail`
            else:
                _set(row, S.ROLLED_BACK, "reverting", reason, now)
            reverted += 1
        session.add(row)
    session.add(rollout)
    _LOGGER.warning("rollout %s %s (%s): %d devices reverted", rollout.id, status.value,
                    reason, reverted)  # fmt: skip


def apply_event(
    session: Session, device_id: str, event: RolloutEvent, now: datetime, *, commit: bool = True
) -> bool:
    """Record one device event; False when it is stale or belongs to no rollout."""
    if event.rollout_id is None:
        return False
    row = session.get(RolloutDevice, (event.rollout_id, device_id))
    if row is None or row.desired_version is None or event.desired_version != row.desired_version:
        return False  # an older desired version's event: ignore (at-least-once, reordering)
    rollout = session.get(Rollout, event.rollout_id)
    if rollout is not None and rollout.status in (RolloutStatus.ABORTED.value,
                                                  RolloutStatus.ROLLED_BACK.value):  # fmt: skip
        row.sub_status = f"revert:{event.kind}"[:32]
        row.detail = event.detail or row.detail
    else:
        current = DeviceRolloutState(row.state)
        if not event_applies(current, event.kind):
            return False
        state, sub = state_for_event(event.kind)
        _set(row, state, sub, event.detail, now)
        if event.bytes_total:
            row.detail = event.detail or f"{event.bytes_done or 0}/{event.bytes_total} bytes"
    row.updated_at = now
    session.add(row)
    if commit:
        session.commit()
    return True


def reconcile_state(
    session: Session, device_id: str, state: dict[str, Any], now: datetime, *, commit: bool = True
) -> None:
    """Settle in-progress rows from the device's retained state when its events went missing."""
    applied = state.get("desired_version")
    if not isinstance(applied, int):
        return
    active = state.get("active") if isinstance(state.get("active"), dict) else None
    rows = session.exec(
        select(RolloutDevice).where(
            RolloutDevice.device_id == device_id, RolloutDevice.state == S.IN_PROGRESS.value
        )
    ).all()
    changed = False
    for row in rows:
        if row.desired_version is None or applied < row.desired_version:
            continue
        if now - as_utc(row.updated_at) < timedelta(seconds=RECONCILE_AFTER_S):
            continue  # its own events are probably still on the way
        rollout = session.get(Rollout, row.rollout_id)
        if rollout is None:
            continue
        serving = active and (active.get("name"), active.get("version")) == (
            rollout.model_name, rollout.model_version)  # fmt: skip
        if serving:
            _set(row, S.SUCCEEDED, "active", "settled from the device's state", now)
        else:
            _set(row, S.FAILED, "kept_previous", "device applied it but kept its model", now)
        session.add(row)
        changed = True
    if changed and commit:
        session.commit()


def _set(
    row: RolloutDevice, state: DeviceRolloutState, sub: str, detail: str, now: datetime
) -> None:
    row.state, row.sub_status, row.detail, row.updated_at = state.value, sub[:32], detail, now


__all__ = [
    "TERMINAL_STATES", "apply_event", "matching_devices", "reconcile_state", "revert", "tick"
]  # fmt: skip
