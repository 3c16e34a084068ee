"""The audit log (admin): every operator action, newest first, never editable here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controlplane.api.deps import AdminDep, SessionDep
from controlplane.audit.models import AuditPage
from controlplane.audit.trail import list_entries
from models.protocol import INT32_MAX

router = APIRouter(prefix="/audit", tags=["audit"])

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep,
    _admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="entries per page")] = DEFAULT_PAGE,
    before: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="entries older than this id")
    ] = None,
    actor: Annotated[str | None, Query(max_length=100, description="token name")] = None,
    action: Annotated[str | None, Query(max_length=100, description="e.g. pause_rollout")] = None,
    target: Annotated[str | None, Query(max_length=300, description="part of the target")] = None,
) -> AuditPage:
    """Who did what, to what, from where and with what result; keyset-paged by `before`."""
    return list_entries(
        session, limit=limit, before=before, actor=actor, action=action, target=target
    )
