"""Bulk statements shared by the driver, and dispatching an agent release to devices."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlmodel import Session, select

from controlplane.rollouts import desired
from controlplane.rollouts.desired import chunks
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.strategy import DeviceRolloutState
from models.protocol import AgentRelease

_LOGGER = logging.getLogger(__name__)

S = DeviceRolloutState
RD: Table = RolloutDevice.__table__  # type: ignore[attr-defined]
_DISPATCHED = (
    update(RD)
    .where(RD.c.rollout_id == bindparam("b_rollout"), RD.c.device_id == bindparam("b_device"))
    .values(
        previous_models=bindparam("b_previous", type_=RD.c.previous_models.type),
        desired_version=bindparam("b_version"),
        dispatched_at=bindparam("b_at", type_=RD.c.dispatched_at.type),
        updated_at=bindparam("b_at", type_=RD.c.updated_at.type),
        state=S.IN_PROGRESS.value,
        sub_status="dispatched",
        detail="",
    )
)


def supersede(session: Session, ids: Sequence[str], rollout: Rollout, now: datetime) -> None:
    """Cancel these devices' unfinished rows in other rollouts of the same kind (model/agent)."""
    session.execute(
        update(RD)
        .where(
            RD.c.device_id.in_(ids),
            RD.c.rollout_id != rollout.id,
            RD.c.state.in_([S.QUEUED.value, S.IN_PROGRESS.value]),
            RD.c.rollout_id.in_(select(Rollout.id).where(Rollout.kind == rollout.kind)),
        )
        .values(
            state=S.CANCELED.value,
            sub_status="superseded",
            detail=f"superseded by rollout {rollout.id}",
            updated_at=now,
        )
    )


def mark_dispatched(
    session: Session,
    rollout: Rollout,
    versions: Mapping[str, int],
    previous: Mapping[str, list[dict[str, Any]]],
    now: datetime,
) -> None:
    """Move these devices' rows to in progress with their desired version and what they ran."""
    session.execute(
        _DISPATCHED,
        [
            {
                "b_rollout": rollout.id,
                "b_device": d,
                "b_version": version,
                "b_at": now,
                "b_previous": previous[d],
            }
            for d, version in versions.items()
        ],
    )


def dispatch_agent(session: Session, rollout: Rollout, queued: list[str], now: datetime) -> None:
    """Send the rollout's agent release; each device keeps its models."""
    target = AgentRelease(
        version=rollout.model_version, release_url=rollout.manifest_url, rollout_id=rollout.id
    ).model_dump(mode="json")
    for part in chunks(queued):
        supersede(session, part, rollout, now)
        previous = desired.agents_by_device(session, part)
        versions = desired.set_agent_many(session, dict.fromkeys(part, target))
        was = {d: [agent] if (agent := previous.get(d)) else [] for d in part}
        mark_dispatched(session, rollout, versions, was, now)
    if queued:
        _LOGGER.info(
            "rollout %s: agent %s sent to %d devices",
            rollout.id,
            rollout.model_version,
            len(queued),
        )
