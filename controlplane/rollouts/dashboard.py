"""Dashboard pages for rollouts: the list, and one rollout with per-wave progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from controlplane.api.deps import SessionDep
from controlplane.dashboard.routes import Viewer, _page
from controlplane.errors import ApiError
from controlplane.rollouts import service
from controlplane.rollouts.models import RolloutDevice

router = APIRouter(include_in_schema=False)
DEVICE_ROWS = 200  # device rows a page: a 10,000-device rollout is not one HTML page


@router.get("/rollouts")
def rollouts_page(request: Request, session: SessionDep, viewer: Viewer) -> HTMLResponse:
    """Every rollout with its status and per-wave progress."""
    rollouts = [service.to_public(session, r) for r in service.list_rollouts(session)]
    return _page(request, "rollouts.html", viewer, rollouts=rollouts, devices=None)


def device_rows(
    session: Session, rollout_id: str, *, after: tuple[int, str] | None, limit: int
) -> list[RolloutDevice]:
    """Up to `limit` of the rollout's devices by wave and id, after (wave, device id) `after`
    (keyset paging: reads `limit` rows of ix_rollout_device_page, however far in)."""
    query = select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
    if after is not None:
        wave, device_id = after
        query = query.where(
            or_(
                col(RolloutDevice.wave) > wave,
                and_(col(RolloutDevice.wave) == wave, col(RolloutDevice.device_id) > device_id),
            )
        )
    query = query.order_by(col(RolloutDevice.wave), col(RolloutDevice.device_id)).limit(limit)
    return list(session.exec(query))


def parse_after(value: str) -> tuple[int, str] | None:
    """`WAVE:DEVICE_ID` (the `after` query value) as a key, or None (the first page)."""
    wave, sep, device_id = value.partition(":")
    if not sep or not wave.isdigit() or not device_id:
        return None
    return int(wave), device_id


@router.get("/rollouts/{rollout_id}")
def rollout_page(
    rollout_id: str,
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    after: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    """One rollout: waves, and its devices' states a page at a time (`after=WAVE:ID`)."""
    try:
        rollout = service.get_rollout(session, rollout_id)
    except ApiError:
        return _page(request, "rollouts.html", viewer, rollouts=[], devices=None)
    rows = device_rows(session, rollout_id, after=parse_after(after), limit=DEVICE_ROWS + 1)
    devices = [service.device_to_public(d) for d in rows[:DEVICE_ROWS]]
    last = devices[-1] if len(rows) > DEVICE_ROWS else None
    return _page(
        request,
        "rollouts.html",
        viewer,
        rollouts=[service.to_public(session, rollout)],
        devices=devices,
        next_after=f"{last.wave}:{last.device_id}" if last is not None else "",
        paged=bool(after),
    )
