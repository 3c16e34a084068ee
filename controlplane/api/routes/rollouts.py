"""Rollouts: create (operator), list and show with per-wave progress, and operator actions."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from controlplane.api.deps import OperatorDep, SessionDep, SettingsDep, ViewerDep
from controlplane.rollouts import service
from controlplane.rollouts.models import (
    RolloutAction,
    RolloutCreate,
    RolloutDevicePublic,
    RolloutPublic,
)

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


@router.post("", status_code=201, response_model=RolloutPublic)
def create_rollout(
    body: RolloutCreate, session: SessionDep, settings: SettingsDep, operator: OperatorDep
) -> RolloutPublic:
    """Start rolling a registered model version out to the devices the selector matches."""
    rollout = service.create_rollout(
        session, spec=body, created_by=operator.name, settings=settings
    )
    return service.to_public(session, rollout)


@router.get("", response_model=list[RolloutPublic])
def list_rollouts(
    session: SessionDep, _viewer: ViewerDep, status: str | None = None
) -> list[RolloutPublic]:
    """Rollouts, newest first (optionally only those in one status)."""
    return [service.to_public(session, r) for r in service.list_rollouts(session, status=status)]


@router.get("/{rollout_id}", response_model=RolloutPublic)
def get_rollout(rollout_id: str, session: SessionDep, _viewer: ViewerDep) -> RolloutPublic:
    """One rollout with per-wave progress."""
    return service.to_public(session, service.get_rollout(session, rollout_id))


@router.get("/{rollout_id}/devices", response_model=list[RolloutDevicePublic])
def rollout_devices(
    rollout_id: str, session: SessionDep, _viewer: ViewerDep
) -> list[RolloutDevicePublic]:
    """Every device of the rollout with its state, sub-status and last detail."""
    service.get_rollout(session, rollout_id)
    return [service.device_to_public(r) for r in service.devices_of(session, rollout_id)]


def _action(action: str) -> Callable[..., RolloutPublic]:
    def handler(
        rollout_id: str, session: SessionDep, _op: OperatorDep, body: RolloutAction | None = None
    ) -> RolloutPublic:
        reason = body.reason if body else ""
        rollout = service.act(session, rollout_id, action, reason)
        return service.to_public(session, rollout)

    handler.__doc__ = f"{action.capitalize()} the rollout."
    handler.__name__ = f"{action}_rollout"
    return handler


for _name in ("pause", "resume", "abort", "rollback"):
    router.add_api_route(
        f"/{{rollout_id}}/{_name}", _action(_name), methods=["POST"], response_model=RolloutPublic
    )
