"""A device's model history for its page: the rollouts that reached it, oldest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session

from controlplane.dashboard.embed import script_json
from controlplane.db_models import as_utc
from controlplane.rollouts.models import Rollout, RolloutDevice
from models.protocol import utcnow


def model_history(session: Session, device_id: str) -> str:
    """The device's rollouts as timeline segments (JSON): model, state, from, to."""
    ro: Any = Rollout.__table__  # type: ignore[attr-defined]
    rd: Any = RolloutDevice.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        sa_select(
            ro.c.id,
            ro.c.model_name,
            ro.c.model_version,
            ro.c.kind,
            rd.c.state,
            rd.c.dispatched_at,
            rd.c.updated_at,
        )
        .join(ro, ro.c.id == rd.c.rollout_id)
        .where(rd.c.device_id == device_id)
    ).all()
    items = []
    for rid, name, version, kind, state, dispatched, updated in rows:
        began = dispatched or updated
        items.append(
            {
                "rollout": rid,
                "model": f"{'agent ' if kind == 'agent' else ''}{name}:{version}",
                "state": state,
                "from": as_utc(began).isoformat(),
                "to": as_utc(updated).isoformat(),
            }
        )
    items.sort(key=lambda i: i["from"])
    return script_json({"now": utcnow().isoformat(), "items": items})
