"""Dashboard pages for rollouts: the list, and one rollout with per-wave progress."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from controlplane.api.deps import SessionDep
from controlplane.dashboard.routes import Viewer, _page
from controlplane.errors import ApiError
from controlplane.rollouts import service

router = APIRouter(include_in_schema=False)


@router.get("/rollouts")
def rollouts_page(request: Request, session: SessionDep, viewer: Viewer) -> HTMLResponse:
    """Every rollout with its status and per-wave progress."""
    rollouts = [service.to_public(session, r) for r in service.list_rollouts(session)]
    return _page(request, "rollouts.html", viewer, rollouts=rollouts, devices=None)


@router.get("/rollouts/{rollout_id}")
def rollout_page(
    rollout_id: str, request: Request, session: SessionDep, viewer: Viewer
) -> HTMLResponse:
    """One rollout: waves and each device's state."""
    try:
        rollout = service.get_rollout(session, rollout_id)
    except ApiError:
        return _page(request, "rollouts.html", viewer, rollouts=[], devices=None)
    devices = [service.device_to_public(d) for d in service.devices_of(session, rollout_id)]
    return _page(
        request,
        "rollouts.html",
        viewer,
        rollouts=[service.to_public(session, rollout)],
        devices=devices,
    )
