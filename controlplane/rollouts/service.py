"""Operator actions on rollouts: create, list, show, pause, resume, abort, roll back."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from controlplane import agent_releases
from controlplane.core.config import Settings
from controlplane.crud.models import get_model_version
from controlplane.db_models import as_utc, utcnow
from controlplane.enrollment import artifacts_url as public_artifacts_url
from controlplane.errors import ApiError
from controlplane.rollouts import driver
from controlplane.rollouts.models import (
    Rollout,
    RolloutCreate,
    RolloutDevice,
    RolloutDevicePublic,
    RolloutPublic,
    WaveProgress,
)
from controlplane.rollouts.strategy import FAILED_STATES, DeviceRolloutState, RolloutStatus
from models.agent_release import RELEASE_NAME


def create_rollout(
    session: Session,
    *,
    spec: RolloutCreate,
    created_by: str,
    settings: Settings | None = None,
    artifacts_url: str = "",
) -> Rollout:
    """Record a rollout of a registered model version or agent release; the controller runs it.

    Devices fetch the manifest under `artifacts_url`, by default the one `settings` publish.
    """
    if not artifacts_url:
        assert settings is not None, "create_rollout needs settings or artifacts_url"
        artifacts_url = public_artifacts_url(settings)
    if spec.agent:
        return _create_agent_rollout(session, spec=spec, created_by=created_by, settings=settings)
    name, sep, version = spec.model.partition(":")
    if not sep or not name or not version:
        raise ApiError(422, "bad_model", f"model {spec.model!r}: use name:version")
    if get_model_version(session, name=name, version=version) is None:
        raise ApiError(
            404, "model_not_found", f"model {spec.model} is not in the registry; import it first"
        )
    return _save(
        session,
        spec,
        created_by,
        model_name=name,
        model_version=version,
        manifest_url=f"{artifacts_url}/{name}/{version}/manifest.json",
    )


def _create_agent_rollout(
    session: Session, *, spec: RolloutCreate, created_by: str, settings: Settings | None
) -> Rollout:
    if spec.model:
        raise ApiError(422, "bad_rollout", "give either a model or an agent release, not both")
    if settings is None or agent_releases.get_release(settings, spec.agent) is None:
        raise ApiError(
            404,
            "release_not_found",
            f"agent release {spec.agent} is not in the "
            "registry; `edgefleet-cp agent-releases import DIR` first",
        )
    return _save(
        session,
        spec,
        created_by,
        kind="agent",
        model_name=RELEASE_NAME,
        model_version=spec.agent,
        manifest_url=agent_releases.release_url(settings, spec.agent),
    )


def _save(session: Session, spec: RolloutCreate, created_by: str, **fields: Any) -> Rollout:
    rollout = Rollout(
        id=f"ro-{uuid.uuid4().hex[:12]}",
        selector=spec.selector.model_dump(mode="json"),
        strategy=spec.strategy.model_dump(mode="json"),
        created_by=created_by,
        **fields,
    )
    session.add(rollout)
    session.commit()
    session.refresh(rollout)
    return rollout


def get_rollout(session: Session, rollout_id: str) -> Rollout:
    """The rollout, or a 404 refusal."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise ApiError(404, "not_found", f"no rollout {rollout_id}; see `rollouts list`")
    return rollout


def list_rollouts(session: Session, *, status: str | None = None) -> list[Rollout]:
    """Rollouts, newest first."""
    query = select(Rollout).order_by(col(Rollout.created_at).desc())
    if status:
        query = query.where(Rollout.status == status)
    return list(session.exec(query))


def devices_of(session: Session, rollout_id: str) -> list[RolloutDevice]:
    """The rollout's devices by wave and id."""
    return list(
        session.exec(
            select(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout_id)
            .order_by(col(RolloutDevice.wave), col(RolloutDevice.device_id))
        )
    )


_ACTIONS: dict[str, tuple[set[RolloutStatus], RolloutStatus | None]] = {
    "pause": ({RolloutStatus.SCHEDULED, RolloutStatus.RUNNING}, RolloutStatus.PAUSED),
    "resume": ({RolloutStatus.PAUSED, RolloutStatus.WAITING_APPROVAL}, RolloutStatus.RUNNING),
    "abort": (
        {
            RolloutStatus.SCHEDULED,
            RolloutStatus.RUNNING,
            RolloutStatus.PAUSED,
            RolloutStatus.WAITING_APPROVAL,
        },
        RolloutStatus.ABORTED,
    ),
    "rollback": (
        {
            RolloutStatus.SCHEDULED,
            RolloutStatus.RUNNING,
            RolloutStatus.PAUSED,
            RolloutStatus.WAITING_APPROVAL,
            RolloutStatus.SUCCEEDED,
            RolloutStatus.ABORTED,
        },
        RolloutStatus.ROLLED_BACK,
    ),
}


def act(session: Session, rollout_id: str, action: str, reason: str = "") -> Rollout:
    """pause / resume / abort / rollback; a 409 refusal when the status does not allow it."""
    rollout = get_rollout(session, rollout_id)
    allowed, target = _ACTIONS[action]
    status = RolloutStatus(rollout.status)
    if status not in allowed or target is None:
        raise ApiError(409, "conflict", f"cannot {action} a rollout that is {status.value}")
    now = utcnow()
    if action in ("pause", "resume"):
        if action == "resume" and rollout.started_at is None:
            target = RolloutStatus.SCHEDULED
        elif action == "resume" and status is RolloutStatus.WAITING_APPROVAL:
            rollout.current_wave += 1
        rollout.status, rollout.reason = target.value, reason
        session.add(rollout)
    else:
        rows = devices_of(session, rollout_id)
        why = reason or f"{action} by operator"
        driver.revert(session, rollout, rows, target, why, now)
    session.commit()
    session.refresh(rollout)
    return rollout


def to_public(session: Session, rollout: Rollout) -> RolloutPublic:
    """The API view with per-wave progress."""
    strategy = rollout.parsed_strategy()
    per_wave: dict[int, Counter[str]] = defaultdict(Counter)
    counts: Counter[str] = Counter()
    grouped = session.exec(
        select(RolloutDevice.wave, RolloutDevice.state, func.count())
        .where(RolloutDevice.rollout_id == rollout.id)
        .group_by(col(RolloutDevice.wave), col(RolloutDevice.state))
    )
    for wave_index, state, n in grouped:  # one aggregate query, not one row per device
        per_wave[wave_index][state] += n
        counts[state] += n
    waves = []
    for index, wave in enumerate(strategy.waves):
        c = per_wave[index]
        failed = sum(c[s.value] for s in FAILED_STATES)
        waves.append(
            WaveProgress(
                index=index,
                target=str(wave),
                devices=sum(c.values()),
                queued=c[DeviceRolloutState.QUEUED.value],
                in_progress=c[DeviceRolloutState.IN_PROGRESS.value],
                succeeded=c[DeviceRolloutState.SUCCEEDED.value],
                failed=failed,
            )
        )
    return RolloutPublic(
        id=rollout.id,
        kind=rollout.kind,
        model=f"{rollout.model_name}:{rollout.model_version}",
        manifest_url=rollout.manifest_url,
        selector=rollout.selector,
        strategy=rollout.strategy,
        status=rollout.status,
        current_wave=rollout.current_wave,
        reason=rollout.reason,
        created_by=rollout.created_by,
        created_at=as_utc(rollout.created_at),
        started_at=as_utc(rollout.started_at) if rollout.started_at else None,
        finished_at=as_utc(rollout.finished_at) if rollout.finished_at else None,
        waves=waves,
        counts=dict(counts),
    )


def device_to_public(row: RolloutDevice) -> RolloutDevicePublic:
    """The API view of one device in a rollout."""
    return RolloutDevicePublic.model_validate(row, from_attributes=True)
