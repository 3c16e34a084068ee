"""Soaking devices: after `active`, a device's telemetry is judged against its own baseline.

`settle_soaks` runs in the driver's tick for each running rollout with a soak window. A
device that regressed beyond the rollout's bounds is failed and sent its previous model
(or agent) at once; one that stayed healthy for the whole window succeeds. Samples are read
with one query per chunk of soaking devices.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Table
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from controlplane.db_models import as_utc
from controlplane.rollouts import desired
from controlplane.rollouts.desired import chunks
from controlplane.rollouts.events import SOAKING, set_state
from controlplane.rollouts.health import HealthBounds, HealthWindow, regression
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.rollouts.strategy import DeviceRolloutState
from controlplane.telemetry_models import TelemetrySample
from models.protocol import DesiredModel

_LOGGER = logging.getLogger(__name__)

S = DeviceRolloutState
SOAK_FAILED = "soak_failed"
_TS: Table = TelemetrySample.__table__  # type: ignore[attr-defined]
_Row = tuple[float | None, float | None, int, int]


def settle_soaks(session: Session, rollout: Rollout, now: datetime) -> int:
    """Fail regressed soaking devices (reverting them), pass those whose window is over."""
    strategy = rollout.parsed_strategy()
    rows = list(
        session.exec(
            select(RolloutDevice)
            .where(
                RolloutDevice.rollout_id == rollout.id,
                RolloutDevice.state == S.IN_PROGRESS.value,
                RolloutDevice.sub_status == SOAKING,
            )
            .execution_options(populate_existing=True)
        )
    )
    if not rows:
        return 0
    windows = _windows(session, rows, strategy.health, now)
    failed: list[RolloutDevice] = []
    settled = 0
    for row in rows:
        baseline, after = windows.get(row.device_id, (HealthWindow(), HealthWindow()))
        why = regression(baseline, after, strategy.health)
        activated = as_utc(row.activated_at or row.updated_at)
        if why is not None:
            set_state(row, S.FAILED, SOAK_FAILED, f"soak: {why}", now)
            failed.append(row)
        elif now - activated >= timedelta(seconds=strategy.soak_s):
            set_state(
                row, S.SUCCEEDED, "active", f"soaked {strategy.soak_s:g} s: {after.describe()}", now
            )
        else:
            continue
        session.add(row)
        settled += 1
    if failed:
        revert_devices(session, rollout, failed)
        _LOGGER.warning(
            "rollout %s: %d devices regressed during the soak and were reverted",
            rollout.id,
            len(failed),
        )
    return settled


def revert_devices(session: Session, rollout: Rollout, rows: Sequence[RolloutDevice]) -> None:
    """Send each device what it had before this rollout (a new desired version each)."""
    if rollout.kind == "agent":
        agents = {r.device_id: (r.previous_models[0] if r.previous_models else None) for r in rows}
        versions = desired.set_agent_many(session, agents)
    else:
        models = {
            r.device_id: [
                DesiredModel.model_validate({**m, "rollout_id": rollout.id})
                for m in r.previous_models
            ]
            for r in rows
        }
        versions = desired.set_many(session, models)
    for row in rows:
        row.desired_version = versions.get(row.device_id, row.desired_version)
        session.add(row)


def _windows(
    session: Session, rows: Sequence[RolloutDevice], bounds: HealthBounds, now: datetime
) -> dict[str, tuple[HealthWindow, HealthWindow]]:
    """Per device: its baseline (before dispatch) and its window since activation."""
    out: dict[str, tuple[HealthWindow, HealthWindow]] = {}
    reach = timedelta(seconds=bounds.baseline_s)
    for part in chunks(list(rows)):
        starts = [as_utc(r.dispatched_at or r.updated_at) - reach for r in part]
        samples: dict[str, list[tuple[datetime, _Row]]] = defaultdict(list)
        found = session.execute(
            sa_select(
                _TS.c.device_id,
                _TS.c.ts,
                _TS.c.tokens_per_s,
                _TS.c.ttft_ms,
                _TS.c.requests,
                _TS.c.errors,
            )
            .where(_TS.c.device_id.in_([r.device_id for r in part]))
            .where(_TS.c.ts >= min(starts), _TS.c.ts <= now)
        )
        for device_id, ts, tps, ttft, requests, errors in found:
            samples[device_id].append((as_utc(ts), (tps, ttft, requests, errors)))
        for row in part:
            dispatched = as_utc(row.dispatched_at or row.updated_at)
            activated = as_utc(row.activated_at or row.updated_at)
            mine = samples.get(row.device_id, [])
            before = [s for ts, s in mine if dispatched - reach <= ts < dispatched]
            after = [s for ts, s in mine if ts >= activated]
            out[row.device_id] = (HealthWindow.of(before), HealthWindow.of(after))
    return out
