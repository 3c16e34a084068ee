"""Dashboard roles, as in the API (viewer sees, operator acts, admin manages tokens), and CSRF.

Every dashboard action depends on `Operator` or `Admin`: the cookie's token must hold the
role, the form must carry the session's CSRF token, and the action is noted for the audit
log with source `dashboard`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from controlplane.audit.trail import note_actor
from controlplane.dashboard.routes import Viewer, _page
from controlplane.dashboard.session import csrf_matches, csrf_ok
from controlplane.db_models import ApiToken, Role
from controlplane.errors import ControlPlaneError


class DashboardRefused(ControlPlaneError):
    """A dashboard action refused: answered as a page, not as JSON."""

    status, code = 403, "forbidden"


def _csrf_failed() -> DashboardRefused:
    return DashboardRefused(
        "this form expired or came from another site: reload the page and try again",
        code="csrf_failed",
    )


def check_csrf(request: Request, sent: str) -> None:
    """DashboardRefused unless `sent` is the session's CSRF token."""
    if not csrf_matches(request, sent):
        raise _csrf_failed()


def dashboard_role(
    role: Role, *, csrf: bool = True
) -> Callable[[Request, ApiToken], Awaitable[ApiToken]]:
    """A dependency: the signed-in token with at least `role`, on a request with CSRF token
    (`csrf=False`: the route checks it with `check_csrf`, once it has streamed an upload)."""

    async def _check(request: Request, viewer: Viewer) -> ApiToken:
        if request.method not in ("GET", "HEAD"):
            note_actor(request.state, viewer, source="dashboard")
            if csrf and not await csrf_ok(request):
                raise _csrf_failed()
        if Role(viewer.role).rank < role.rank:
            raise DashboardRefused(f"this needs the {role.value} role; you are {viewer.role}")
        return viewer

    return _check


Operator = Annotated[ApiToken, Depends(dashboard_role(Role.operator))]
Admin = Annotated[ApiToken, Depends(dashboard_role(Role.admin))]
# An operator sending a file: the role is checked before the body is read, CSRF after.
Uploader = Annotated[ApiToken, Depends(dashboard_role(Role.operator, csrf=False))]


def install_refusals(app: FastAPI) -> None:
    """Answer `DashboardRefused` with a page that says why."""

    async def _refused(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, DashboardRefused)
        return _page(
            request,
            "message.html",
            None,
            status_code=exc.status,
            title="Not allowed",
            message=exc.message,
        )

    app.add_exception_handler(DashboardRefused, _refused)
