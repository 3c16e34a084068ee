"""Dashboard pages: overview, devices (filtered), device detail with charts, models.

Operators paste an API token once; it is kept in an HttpOnly cookie and checked like the
API's bearer token (viewer role is enough). Chart data is embedded in the page as JSON, so
the browser makes no authenticated API calls of its own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from controlplane import crud
from controlplane.api.deps import SessionDep, parse_selector
from controlplane.dashboard.embed import script_json
from controlplane.dashboard.hardware import hardware_rows
from controlplane.dashboard.history import model_history
from controlplane.dashboard.session import CSRF_COOKIE, csrf_token, keep_session, take_flash
from controlplane.db_models import ApiToken, Role, as_utc
from controlplane.errors import ApiError, LoginRequired
from controlplane.ingest_counters import DROP_REASONS, by_device
from controlplane.telemetry_models import FleetSummary
from controlplane.telemetry_reads import chart_window, series
from controlplane.telemetry_summary import SummaryCache
from models.protocol import utcnow

HERE = Path(__file__).resolve().parent
COOKIE = "edgefleet_token"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
CHART_METRICS = ("tokens_per_s", "ttft_ms", "cpu_percent", "temperature_c")
RANGES = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
CHART_POINTS = 120
RECENT_DROPS = timedelta(hours=24)  # the overview lists devices with drops counted this recently
DROP_ROWS = 10
DEVICES_PAGE = 200  # rows per device list page: a 10,000-device fleet is not one HTML page

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def current_viewer(request: Request, session: SessionDep) -> ApiToken:
    """The operator whose token is in the cookie (any role can view)."""
    secret = request.cookies.get(COOKIE, "")
    token = crud.get_api_token_by_secret(session, secret=secret) if secret else None
    if token is None:
        raise LoginRequired("sign in to see the dashboard")
    if token.expires_at is not None and as_utc(token.expires_at) <= utcnow():
        raise LoginRequired("your token expired; sign in with a new one")
    return token


Viewer = Annotated[ApiToken, Depends(current_viewer)]


def fleet_counts(request: Request, session: SessionDep) -> FleetSummary:
    """The fleet summary, shared by the pages that show it for up to a couple of seconds."""
    cache: SummaryCache = request.app.state.summary_cache
    return cache.get(session)


FleetCounts = Annotated[FleetSummary, Depends(fleet_counts)]


def _page(
    request: Request, name: str, viewer: ApiToken | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    csrf = csrf_token(request)
    rank = Role(viewer.role).rank if viewer is not None else -1
    response = templates.TemplateResponse(
        request,
        name,
        {
            "viewer": viewer,
            "csrf_token": csrf,
            "flash": take_flash(request),
            "can_operate": rank >= Role.operator.rank,
            "can_admin": rank >= Role.admin.rank,
            **context,
        },
        status_code=status_code,
    )
    keep_session(request, response, csrf)
    return response


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    """The token form."""
    return _page(request, "login.html", None, error="")


@router.post("/login")
def login(request: Request, session: SessionDep, token: Annotated[str, Form()]) -> Response:
    """Check the pasted token; on success keep it in a cookie."""
    secret = token.strip()
    if not secret or crud.get_api_token_by_secret(session, secret=secret) is None:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"viewer": None, "error": "That token is unknown or revoked; ask an admin for one."},
            status_code=401,
        )
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(CSRF_COOKIE)  # a new session gets a new CSRF token
    response.set_cookie(
        COOKIE,
        secret,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    """Forget the token."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/")
def overview(
    request: Request, session: SessionDep, viewer: Viewer, summary: FleetCounts
) -> HTMLResponse:
    """Fleet counts and the fleet-wide tokens/s chart."""
    now = utcnow()
    start, end = chart_window(now, RANGES["6h"])
    points = series(
        session,
        metric="tokens_per_s",
        start=start,
        end=end,
        bucket_s=int(RANGES["6h"].total_seconds() // CHART_POINTS),
    )
    fleet_chart = _chart_json("tokens_per_s", points)
    return _page(
        request,
        "overview.html",
        viewer,
        summary=summary,
        fleet_chart=fleet_chart,
        drops=by_device(session, limit=DROP_ROWS, since=now - RECENT_DROPS),
        drop_reasons=DROP_REASONS,
    )


@router.get("/devices")
def devices(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    labels: str = "",
    device_class: str = "",
    online: str = "",
    model: str = "",
    page: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> HTMLResponse:
    """Devices with filters (labels k=v,..., class, online, model), a page at a time."""
    error = ""
    try:
        selector = parse_selector(labels) if labels else None
    except ApiError as exc:
        selector, error = None, exc.message
    where = crud.DeviceFilter(
        labels=selector,
        device_class=device_class or None,
        online={"yes": True, "no": False}.get(online),
        model=model or None,
        include_revoked=False,
    )
    # one more than shown: whether there is a next page
    items = crud.list_public_devices(
        session, where=where, limit=DEVICES_PAGE + 1, offset=page * DEVICES_PAGE
    )
    filters = {"labels": labels, "device_class": device_class, "online": online, "model": model}
    return _page(
        request,
        "devices.html",
        viewer,
        devices=items[:DEVICES_PAGE],
        filters=filters,
        error=error,
        page=page,
        more=len(items) > DEVICES_PAGE,
    )


@router.get("/devices/{device_id}")
def device_detail(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    device_id: str,
    window: Annotated[str, Query(alias="range")] = "1h",
) -> HTMLResponse:
    """Hardware, active model and engine, and telemetry charts."""
    public = crud.get_public_device(session, device_id=device_id)
    if public is None:
        return _page(request, "missing.html", viewer, device_id=device_id)
    window = window if window in RANGES else "1h"
    span = RANGES[window]
    now = utcnow()
    charts = [
        _chart_json(
            metric,
            series(
                session,
                metric=metric,
                start=now - span,
                end=now,
                bucket_s=max(1, int(span.total_seconds() // CHART_POINTS)),
                device_ids=[device_id],
            ),
        )
        for metric in CHART_METRICS
    ]
    active = public.state.get("active") if isinstance(public.state.get("active"), dict) else None
    return _page(
        request,
        "device.html",
        viewer,
        device=public,
        active=active,
        charts=charts,
        ranges=list(RANGES),
        current_range=window,
        hardware=hardware_rows(public.hardware),
        history=model_history(session, device_id),
        drops=by_device(session, limit=len(DROP_REASONS), device_id=device_id),
        drop_reasons=DROP_REASONS,
    )


@router.get("/models")
def models_page(
    request: Request, session: SessionDep, viewer: Viewer, summary: FleetCounts
) -> HTMLResponse:
    """Registered models, their versions and how many devices run each."""
    return _page(
        request, "models.html", viewer, models=crud.list_models(session), running=summary.by_model
    )


def _chart_json(metric: str, points: list[Any]) -> str:
    data = [{"t": p.t.isoformat(), "avg": p.avg, "max": p.max} for p in points]
    return script_json({"metric": metric, "points": data})


def install_dashboard(app: FastAPI) -> None:
    """Add the pages, the static files and the login redirect to `app`."""

    async def _to_login(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    app.state.summary_cache = SummaryCache()
    app.add_exception_handler(LoginRequired, _to_login)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
    from controlplane.dashboard.actions import install_actions
    from controlplane.fleet.dashboard import router as fleet_router
    from controlplane.rollouts.dashboard import router as rollouts_router

    install_actions(app)  # before the rollout pages: /rollouts/new is not a rollout id
    app.include_router(fleet_router)
    app.include_router(rollouts_router)
