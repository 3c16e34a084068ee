"""One step of driving every active rollout, in set-based SQL.

`tick` runs only on the elected replica. A tick costs a few statements per rollout whatever
the fleet size: time-outs are one UPDATE, late joiners one anti-join (on every tenth tick,
`controller.LATE_JOIN_EVERY_TICKS`), wave progress one GROUP BY; only devices being
dispatched (or reverted) are touched row by row, in bulk.
Device events and states are applied by `controlplane.rollouts.events`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, insert, update
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from controlplane.db_models import Device, DeviceLabel, as_utc
from controlplane.rollouts import desired
from controlplane.rollouts.desired import chunks
from controlplane.rollouts.dispatch import RD, dispatch_agent, mark_dispatched, supersede
from controlplane.rollouts.events import SOAKING, apply_events, reconcile_states, set_state
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.soak import SOAK_FAILED, settle_soaks
from controlplane.rollouts.strategy import (
    TERMINAL_STATES,
    DeviceRolloutState,
    RolloutStatus,
    WaveCounts,
    assign_waves,
    decide,
)
from models.protocol import DesiredModel

_LOGGER = logging.getLogger(__name__)

S = DeviceRolloutState
DRIVEN = (
    RolloutStatus.SCHEDULED,
    RolloutStatus.RUNNING,
    RolloutStatus.PAUSED,
    RolloutStatus.WAITING_APPROVAL,
)


def tick(session: Session, now: datetime, *, join_late: bool = True) -> None:
    """Advance every rollout that is not finished, one step each (late joiners if asked)."""
    rollouts = session.exec(
        select(Rollout)
        .where(col(Rollout.status).in_([s.value for s in DRIVEN]))
        .execution_options(populate_existing=True)
    ).all()
    for rollout in rollouts:
        try:
            _step(session, rollout, now, join_late=join_late)
            session.commit()
        except Exception:
            session.rollback()
            _LOGGER.exception("rollout %s: step failed; retrying next tick", rollout.id)
        session.expire_all()  # rows were changed by bulk statements behind the identity map


def _step(session: Session, rollout: Rollout, now: datetime, *, join_late: bool) -> None:
    strategy = rollout.parsed_strategy()
    status = RolloutStatus(rollout.status)
    if status is RolloutStatus.SCHEDULED:
        if strategy.start_at is not None and as_utc(strategy.start_at) > now:
            return
        _start(session, rollout, now)
        status = RolloutStatus.RUNNING
    _time_out(session, rollout.id, now, strategy.device_timeout_s)
    if status is not RolloutStatus.RUNNING:
        return
    if join_late:
        _join_late(session, rollout, now)
    _dispatch(session, rollout, now)
    if strategy.soak_s > 0:
        settle_soaks(session, rollout, now)
    per_wave: dict[int, list[DeviceRolloutState]] = {}
    grouped = session.execute(
        select(RD.c.wave, RD.c.state, func.count())
        .where(RD.c.rollout_id == rollout.id)
        .group_by(RD.c.wave, RD.c.state)
    )
    for wave, state, n in grouped:
        per_wave.setdefault(wave, []).extend([DeviceRolloutState(state)] * n)
    counts = [WaveCounts.of(per_wave.get(i, [])) for i in range(len(strategy.waves))]
    dispatched = WaveCounts.of(
        s for wave, states in per_wave.items() if wave <= rollout.current_wave for s in states
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
        rows = session.exec(
            select(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout.id)
            .execution_options(populate_existing=True)
        ).all()
        revert(session, rollout, list(rows), RolloutStatus.ABORTED, why, now)
    elif decision == "complete" and (join_late or not _join_late(session, rollout, now)):
        # A matching device enrolled since the last late-join pass joins instead: a rollout
        # never finishes with one left out (it is dispatched on the next tick).
        rollout.status = RolloutStatus.SUCCEEDED.value
        rollout.finished_at = now
    session.add(rollout)


def _add_devices(session: Session, rollout_id: str, waves: dict[str, int], now: datetime) -> None:
    rows = [
        {
            "rollout_id": rollout_id,
            "device_id": d,
            "wave": w,
            "state": S.QUEUED.value,
            "sub_status": "",
            "detail": "",
            "previous_models": [],
            "updated_at": now,
        }
        for d, w in waves.items()
    ]
    for part in chunks(rows):
        session.execute(insert(RD), list(part))


def _start(session: Session, rollout: Rollout, now: datetime) -> None:
    targets = matching_devices(session, rollout)
    waves = assign_waves(rollout.id, targets, rollout.parsed_strategy().waves)
    _add_devices(session, rollout.id, waves, now)
    rollout.status = RolloutStatus.RUNNING.value
    rollout.started_at = now
    _LOGGER.info("rollout %s started: %d devices", rollout.id, len(targets))


def _join_late(session: Session, rollout: Rollout, now: datetime) -> int:
    """Add the matching devices the rollout does not hold yet to its current wave; how many."""
    known = exists().where(RD.c.rollout_id == rollout.id, RD.c.device_id == Device.id)
    joined = list(session.exec(_matching(rollout).where(~known)))
    if joined:
        _add_devices(session, rollout.id, dict.fromkeys(joined, rollout.current_wave), now)
        _LOGGER.info("rollout %s: %d devices joined", rollout.id, len(joined))
    return len(joined)


def _matching(rollout: Rollout) -> SelectOfScalar[str]:
    """Ids of enrolled, not revoked devices the rollout's selector matches, as one query."""
    selector = rollout.parsed_selector()
    query: SelectOfScalar[str] = select(Device.id).where(col(Device.revoked_at).is_(None))
    if selector.device_ids:
        query = query.where(col(Device.id).in_(selector.device_ids))
    if selector.device_classes:
        query = query.where(col(Device.device_class).in_(selector.device_classes))
    for key, value in selector.labels.items():
        labelled = select(DeviceLabel.device_id).where(
            DeviceLabel.key == key, DeviceLabel.value == value
        )
        query = query.where(col(Device.id).in_(labelled))
    return query


def matching_query(rollout: Rollout) -> SelectOfScalar[str]:
    """The ids the rollout's selector matches, as a query to count or page (form previews)."""
    return _matching(rollout)


def matching_devices(session: Session, rollout: Rollout) -> list[str]:
    """Ids of enrolled, not revoked devices the rollout's selector matches."""
    return list(session.exec(_matching(rollout).order_by(col(Device.id))))


def _dispatch(session: Session, rollout: Rollout, now: datetime) -> None:
    """Send the rollout's model to the queued devices of the waves started so far, in bulk."""
    queued = list(
        session.exec(
            select(RolloutDevice.device_id).where(
                RolloutDevice.rollout_id == rollout.id,
                RolloutDevice.state == S.QUEUED.value,
                col(RolloutDevice.wave) <= rollout.current_wave,
            )
        )
    )
    if rollout.kind == "agent":
        dispatch_agent(session, rollout, queued, now)
        return
    target = DesiredModel(
        name=rollout.model_name,
        version=rollout.model_version,
        manifest_url=rollout.manifest_url,
        files_url=_files_url(rollout.manifest_url),
        rollout_id=rollout.id,
        probe=rollout.parsed_strategy().quality_probe,
    )
    for part in chunks(queued):
        supersede(session, part, rollout, now)
        previous = desired.models_by_device(session, part)
        reported = dict(
            session.execute(
                select(Device.id, Device.active_model).where(
                    col(Device.id).in_([d for d in part if not previous.get(d)])
                )
            ).all()
        )
        versions = desired.set_many(session, dict.fromkeys(part, [target]))
        was = {d: previous.get(d) or _reported_model(rollout, reported.get(d)) for d in part}
        mark_dispatched(session, rollout, versions, was, now)
    if queued:
        _LOGGER.info("rollout %s: %d devices dispatched", rollout.id, len(queued))


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


def _time_out(session: Session, rollout_id: str, now: datetime, timeout_s: float) -> None:
    session.execute(
        update(RD)
        .where(
            RD.c.rollout_id == rollout_id,
            RD.c.state == S.IN_PROGRESS.value,
            RD.c.sub_status != SOAKING,  # a soak ends by its own window
            RD.c.dispatched_at < now - timedelta(seconds=timeout_s),
        )
        .values(state=S.TIMED_OUT.value, detail=f"no result within {timeout_s:g} s", updated_at=now)
    )


def revert(
    session: Session,
    rollout: Rollout,
    rows: Sequence[RolloutDevice],
    status: RolloutStatus,
    reason: str,
    now: datetime,
) -> None:
    """Stop the rollout; queued devices are canceled, the others get their previous model."""
    rollout.status, rollout.reason, rollout.finished_at = status.value, reason, now
    # A device whose soak failed was reverted then; it is not sent its old model twice.
    back = [
        r
        for r in rows
        if r.state not in (S.QUEUED.value, S.CANCELED.value)
        and r.desired_version is not None
        and r.sub_status != SOAK_FAILED
    ]
    if rollout.kind == "agent":
        previous = {r.device_id: r.previous_models[0] if r.previous_models else None for r in back}
        versions = desired.set_agent_many(session, previous)
    else:
        versions = desired.set_many(
            session,
            {
                r.device_id: [
                    DesiredModel.model_validate({**m, "rollout_id": rollout.id})
                    for m in r.previous_models
                ]
                for r in back
            },
        )
    for row in rows:
        if row.state == S.QUEUED.value:
            set_state(row, S.CANCELED, "", reason, now)
        elif row.device_id in versions:
            row.desired_version = versions[row.device_id]
            if row.state in (S.FAILED.value, S.TIMED_OUT.value, S.ROLLED_BACK.value):
                row.sub_status = "reverting"  # keep the device's own reason in `detail`
            else:
                set_state(row, S.ROLLED_BACK, "reverting", reason, now)
        session.add(row)
    session.add(rollout)
    _LOGGER.warning(
        "rollout %s %s (%s): %d devices reverted", rollout.id, status.value, reason, len(back)
    )


__all__ = [
    "TERMINAL_STATES",
    "apply_events",
    "matching_devices",
    "reconcile_states",
    "revert",
    "tick",
]
