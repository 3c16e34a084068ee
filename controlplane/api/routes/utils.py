"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from controlplane.api.deps import SessionDep

router = APIRouter(tags=["utils"])


@router.get("/health")
def health(session: SessionDep) -> dict[str, str]:
    """Ok when the database answers (no auth)."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
