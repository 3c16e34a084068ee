"""Every dependency of the API as an `Annotated` alias."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlmodel import Session

from controlplane import crud
from controlplane.audit.trail import note_actor
from controlplane.commands import CommandPublisher
from controlplane.core.config import Settings
from controlplane.db_models import ApiToken, Device, Role, as_utc, parse_labels, utcnow
from controlplane.errors import ApiError
from controlplane.signing_key import SigningIdentity

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """A session per request."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


async def get_signing(request: Request) -> SigningIdentity:
    """The control plane's signing identity."""
    signing: SigningIdentity = request.app.state.signing
    return signing


async def get_bridge(request: Request) -> CommandPublisher | None:
    """The MQTT bridge (or the ingest process's handle on it), or None while MQTT is off."""
    bridge: CommandPublisher | None = getattr(request.app.state, "bridge", None)
    return bridge


# The accessors above are async because they only read app.state: FastAPI runs a sync
# dependency in the threadpool, a round trip that costs more than the work.
def parse_selector(selector: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {"k": "v", "k2": "v2"}; ApiError 422 when malformed."""
    try:
        return parse_labels(selector)
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc


def device_filter(
    labels: Annotated[str | None, Query(description="`k=v,k2=v2`: every label matches")] = None,
    device_class: str | None = None,
    online: bool | None = None,
    model: Annotated[str | None, Query(description="`name` or `name:version`")] = None,
) -> crud.DeviceFilter:
    """The device filters of a list or fleet-wide read, from its query string (an empty value,
    as a form sends it, filters nothing)."""
    return crud.DeviceFilter(
        labels=parse_selector(labels) if labels else None,
        device_class=device_class or None,
        online=online,
        model=model or None,
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
SigningDep = Annotated[SigningIdentity, Depends(get_signing)]
BridgeDep = Annotated[CommandPublisher | None, Depends(get_bridge)]
DeviceFilterDep = Annotated[crud.DeviceFilter, Depends(device_filter)]


def _unauthorized(code: str, message: str) -> ApiError:
    """A 401 that asks for a bearer token."""
    return ApiError(401, code, message, _CHALLENGE)


def bearer_token(request: Request) -> str:
    """The bearer token of the request, or 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized(
            "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'"
        )
    return token.strip()


def get_current_operator(request: Request, session: SessionDep) -> ApiToken:
    """The operator token the request carries, or 401."""
    token = crud.get_api_token_by_secret(session, secret=bearer_token(request))
    if token is None:
        raise _unauthorized(
            "invalid_token", "API token is unknown or revoked; ask an admin for a new one"
        )
    if token.expires_at is not None and as_utc(token.expires_at) <= utcnow():
        raise _unauthorized(
            "token_expired",
            f"API token {token.name!r} expired at {as_utc(token.expires_at):%Y-%m-%d %H:%M} UTC; "
            "ask an admin for a new one (POST /api/v1/tokens/{id}/rotate)",
        )
    note_actor(request.state, token)
    return token


CurrentOperator = Annotated[ApiToken, Depends(get_current_operator)]


def require_role(role: Role) -> Callable[[ApiToken], Awaitable[ApiToken]]:
    """A dependency that lets through operators holding `role` or a higher one (else 403)."""

    # async: a sync dependency costs a threadpool round trip per request, this one needs none
    async def _check(operator: CurrentOperator) -> ApiToken:
        if Role(operator.role).rank < role.rank:
            raise ApiError(
                403,
                "forbidden",
                f"this needs the {role.value} role; your token has {operator.role}",
            )
        return operator

    return _check


ViewerDep = Annotated[ApiToken, Depends(require_role(Role.viewer))]
OperatorDep = Annotated[ApiToken, Depends(require_role(Role.operator))]
AdminDep = Annotated[ApiToken, Depends(require_role(Role.admin))]


def get_current_device(request: Request, session: SessionDep) -> Device:
    """The enrolled, not revoked device whose artifact token the request carries, or 401."""
    device = crud.get_device_by_artifact_token(session, token=bearer_token(request))
    if device is None:
        raise _unauthorized(
            "invalid_device_token",
            "artifact token is unknown or the device was revoked; enroll the device again",
        )
    return device


CurrentDevice = Annotated[Device, Depends(get_current_device)]
