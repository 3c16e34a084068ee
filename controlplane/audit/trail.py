"""Record every mutating request of an identified operator (API and dashboard) in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.audit.models import AuditEntry, AuditEntryPublic, AuditPage
from controlplane.db_models import ApiToken, Role
from controlplane.metrics.recorders import route_template

_LOGGER = logging.getLogger(__name__)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTOR_KEY = "audit_actor"  # request.state: the ApiToken that made the request
SOURCE_KEY = "audit_source"  # request.state: "dashboard" for the dashboard's forms
TARGET_KEY = "audit_target"  # request.state: what a create made (e.g. the new rollout's id)
_ERROR_BODY_MAX = 4096


def note_actor(state: Any, token: ApiToken, *, source: str = "api") -> None:
    """Remember who makes this request (called where the token is checked)."""
    setattr(state, ACTOR_KEY, token)
    setattr(state, SOURCE_KEY, source)


def note_target(state: Any, target: str) -> None:
    """Name what the request created, when its path does not say."""
    setattr(state, TARGET_KEY, target)


class AuditTrail:
    """ASGI middleware: after a mutating request by a known operator, append its entry."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app, self.engine = app, engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        status, body = 500, bytearray()
        state: dict[str, Any] = scope.setdefault("state", {})  # request.state, shared below

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400:
                body.extend(message.get("body", b"")[: _ERROR_BODY_MAX - len(body)])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            actor = state.get(ACTOR_KEY)
            if isinstance(actor, ApiToken):
                entry = _entry(scope, state, actor, status, bytes(body))
                await run_in_threadpool(self._append, entry)

    def _append(self, entry: AuditEntry) -> None:
        try:
            with Session(self.engine) as session:
                session.add(entry)
                session.commit()
        except Exception:  # the action happened; losing its record must not hide that
            _LOGGER.exception("audit entry %s by %s not written", entry.action, entry.actor)


def _entry(
    scope: Scope, state: dict[str, Any], actor: ApiToken, status: int, body: bytes
) -> AuditEntry:
    route = scope.get("route")
    params = scope.get("path_params") or {}
    target = state.get(TARGET_KEY) or ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    client = scope.get("client")
    return AuditEntry(
        actor=actor.name,
        actor_token_id=actor.id,
        role=Role(actor.role).value,
        source=str(state.get(SOURCE_KEY, "api")),
        action=str(getattr(route, "name", "") or "unknown"),
        method=scope["method"],
        route=route_template(scope)[:300],
        target=str(target)[:300],
        status=status,
        outcome="ok" if status < 400 else "refused" if status < 500 else "error",
        detail=_error_code(body),
        client=str(client[0]) if client else "",
    )


def _error_code(body: bytes) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else error
    return str(code)[:300] if code else ""


def list_entries(
    session: Session,
    *,
    limit: int,
    before: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> AuditPage:
    """Entries newest first, `limit` per page, keyset-paged on the id."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit + 1)
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    if target:
        query = query.where(col(AuditEntry.target).contains(target))
    rows = list(session.exec(query))
    more = len(rows) > limit
    items = [AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return AuditPage(items=items, next_before=items[-1].id if more and items else None)
