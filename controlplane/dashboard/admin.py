"""Admin pages of the dashboard: operator tokens (list, create once-shown, revoke), audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from controlplane import crud
from controlplane.api.deps import SessionDep
from controlplane.audit.trail import list_entries, note_target
from controlplane.dashboard.auth import Admin
from controlplane.dashboard.routes import _page
from controlplane.dashboard.session import flash
from controlplane.db_models import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, Role
from models.protocol import INT32_MAX

router = APIRouter(include_in_schema=False)
AUDIT_PAGE = 50


def _tokens_page(
    request: Request, session: SessionDep, admin: Admin, **context: Any
) -> HTMLResponse:
    return _page(
        request,
        "tokens.html",
        admin,
        tokens=crud.list_api_tokens(session),
        roles=[r.value for r in Role],
        default_days=DEFAULT_TOKEN_DAYS,
        **context,
    )


@router.get("/tokens")
def tokens_page(request: Request, session: SessionDep, admin: Admin) -> HTMLResponse:
    """Every operator token, and the form to make one."""
    return _tokens_page(request, session, admin, created=None)


@router.post("/tokens")
def create_token(
    request: Request,
    session: SessionDep,
    admin: Admin,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    role: Annotated[Role, Form()] = Role.viewer,
    days: Annotated[int, Form(ge=0, le=MAX_TOKEN_DAYS)] = DEFAULT_TOKEN_DAYS,
) -> HTMLResponse:
    """Make an operator token and show its secret this once (days 0: never expires)."""
    token, secret = crud.create_api_token(
        session, name=name.strip(), role=role, expires_in=timedelta(days=days) if days else None
    )
    note_target(request.state, f"token_id={token.id}")
    response = _tokens_page(request, session, admin, created={"token": secret, "row": token})
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: int, session: SessionDep, admin: Admin) -> Response:
    """Revoke an operator token at once."""
    token = crud.revoke_api_token(session, token_id=token_id)
    text = f"token {token.name!r} revoked" if token else f"no token {token_id}"
    return flash(
        RedirectResponse("/tokens", status_code=303), text, kind="ok" if token else "error"
    )


@router.get("/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    admin: Admin,
    before: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    actor: Annotated[str, Query(max_length=100)] = "",
    action: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    """The audit log, newest first, a page at a time."""
    page = list_entries(
        session, limit=AUDIT_PAGE, before=before, actor=actor or None, action=action or None
    )
    return _page(
        request, "audit.html", admin, page=page, filters={"actor": actor, "action": action}
    )
