"""Dashboard rollout actions: the create form (with a live selector preview), approve, pause,
resume, abort and roll back, all through `rollouts.service` like the API."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from controlplane import crud
from controlplane.api.deps import SessionDep, SettingsDep
from controlplane.audit.trail import note_target
from controlplane.dashboard.auth import Operator
from controlplane.dashboard.routes import Viewer, _page
from controlplane.dashboard.session import flash
from controlplane.db_models import parse_labels
from controlplane.errors import ControlPlaneError
from controlplane.rollouts import service
from controlplane.rollouts.models import RolloutCreate
from controlplane.rollouts.preview import SelectorPreview, preview
from controlplane.rollouts.strategy import RolloutStatus, Selector, Strategy, Wave

router = APIRouter(include_in_schema=False)
# The dashboard's verbs and the service action each one is; "approve" starts the next wave.
ACTIONS = {
    "approve": "resume",
    "pause": "pause",
    "resume": "resume",
    "abort": "abort",
    "rollback": "rollback",
}
FORM_DEFAULTS = {
    "kind": "model",
    "model": "",
    "agent": "",
    "labels": "",
    "device_classes": "",
    "device_ids": "",
    "waves": "1%,10%,50%,100%",
    "success_threshold": "1.0",
    "failure_threshold": "0.2",
    "require_approval": "",
    "device_timeout_s": "900",
    "soak_s": "0",
    "start_at": "",
}


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def _selector(labels: str, device_classes: str, device_ids: str) -> Selector:
    return Selector(
        labels=parse_labels(labels),
        device_classes=_split(device_classes),
        device_ids=_split(device_ids),
    )


def parse_form(form: dict[str, str]) -> tuple[RolloutCreate | None, dict[str, str]]:
    """The rollout the form describes, or the message for each field that is wrong."""
    errors: dict[str, str] = {}
    selector = strategy = None
    try:
        selector = _selector(form["labels"], form["device_classes"], form["device_ids"])
    except ValueError as exc:
        errors["labels"] = str(exc)
    values: dict[str, Any] = {"require_approval": bool(form["require_approval"])}
    try:
        values["waves"] = [Wave.parse(w) for w in _split(form["waves"])] or None
        if values["waves"] is None:
            errors["waves"] = "give at least one wave, e.g. 10%,100%"
    except ValueError as exc:
        errors["waves"] = str(exc)
    for key in ("success_threshold", "failure_threshold", "device_timeout_s", "soak_s"):
        try:
            values[key] = float(form[key])
        except ValueError:
            errors[key] = f"{form[key]!r} is not a number"
    if form["start_at"]:
        try:
            start = datetime.fromisoformat(form["start_at"])
            values["start_at"] = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        except ValueError:
            errors["start_at"] = "use a date and time, e.g. 2026-12-01T02:00 (UTC)"
    if not errors:
        try:
            strategy = Strategy.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors():
                errors[str(err["loc"][0]) if err["loc"] else "waves"] = err["msg"]
    target = form["agent"] if form["kind"] == "agent" else form["model"]
    if not target.strip():
        errors[form["kind"] if form["kind"] == "agent" else "model"] = "choose what to roll out"
    if errors or selector is None or strategy is None:
        return None, errors
    spec = {"agent": target.strip()} if form["kind"] == "agent" else {"model": target.strip()}
    return RolloutCreate(**spec, selector=selector, strategy=strategy), {}


def _form_page(
    request: Request,
    session: SessionDep,
    operator: Operator,
    form: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    models = [f"{m.name}:{v}" for m in crud.list_models(session) for v in m.versions]
    return _page(
        request,
        "rollout_new.html",
        operator,
        status_code=status,
        form=form,
        errors=errors,
        models=models,
        agent_rollouts="agent" in RolloutCreate.model_fields,
    )


@router.get("/rollouts/new")
def new_rollout_form(request: Request, session: SessionDep, operator: Operator) -> HTMLResponse:
    """The form that creates a rollout."""
    return _form_page(request, session, operator, dict(FORM_DEFAULTS), {})


@router.get("/rollouts/preview", response_model=SelectorPreview)
def preview_selector(
    session: SessionDep,
    _viewer: Viewer,
    labels: str = "",
    device_classes: str = "",
    device_ids: str = "",
) -> SelectorPreview:
    """How many devices (and which first) the form's selector matches now."""
    try:
        return preview(session, _selector(labels, device_classes, device_ids))
    except ValueError as exc:
        return SelectorPreview(count=0, online=0, devices=[], error=str(exc))


@router.post("/rollouts/new")
async def create_rollout(
    request: Request, session: SessionDep, settings: SettingsDep, operator: Operator
) -> Response:
    """Validate the form; create the rollout, or show the form again with what is wrong."""
    raw = await request.form()
    form = {k: str(raw.get(k, "") or "")[:4000] for k in FORM_DEFAULTS}
    spec, errors = parse_form(form)
    if spec is None:
        return _form_page(request, session, operator, form, errors, status=422)
    try:
        rollout = service.create_rollout(
            session, spec=spec, created_by=operator.name, settings=settings
        )
    except ControlPlaneError as exc:
        return _form_page(request, session, operator, form, {"form": exc.message}, status=422)
    note_target(request.state, f"rollout_id={rollout.id}")
    return flash(
        RedirectResponse(f"/rollouts/{rollout.id}", status_code=303),
        f"rollout {rollout.id} created",
    )


@router.post("/rollouts/{rollout_id}/{verb}")
def act(
    rollout_id: str,
    verb: str,
    session: SessionDep,
    operator: Operator,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Approve the next wave, pause, resume, abort or roll back."""
    back = RedirectResponse(f"/rollouts/{rollout_id}", status_code=303)
    action = ACTIONS.get(verb)
    if action is None:
        return flash(back, f"unknown action {verb!r}", kind="error")
    try:
        status = service.get_rollout(session, rollout_id).status
        if verb == "approve" and status != RolloutStatus.WAITING_APPROVAL.value:
            return flash(back, "no wave waits for approval", kind="error")
        why = reason.strip() or f"{verb} by {operator.name} (dashboard)"
        rollout = service.act(session, rollout_id, action, why)
    except ControlPlaneError as exc:
        return flash(back, exc.message, kind="error")
    return flash(back, f"{rollout.id}: {verb} done, now {rollout.status}")
