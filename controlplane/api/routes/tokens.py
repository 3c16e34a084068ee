"""Operator API tokens (admin), who-am-I, and token rotation."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import StrictInt
from sqlmodel import SQLModel

from controlplane import crud
from controlplane.api.deps import AdminDep, SessionDep, ViewerDep
from controlplane.db_models import (
    DEFAULT_TOKEN_DAYS,
    ApiToken,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    token_term,
)
from controlplane.errors import ApiError
from models.protocol import INT32_MAX

router = APIRouter(tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the token's id")]


class ApiTokenRotate(SQLModel):
    """Body of a rotation: the new token's term."""

    expires_in_days: StrictInt | None = token_term(
        "days until the new token stops working; null: never"
    )


def _term(days: int | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


def _created(token: ApiToken, secret: str) -> ApiTokenCreated:
    public = ApiTokenPublic.model_validate(token, from_attributes=True)
    return ApiTokenCreated(**public.model_dump(), token=secret)


@router.get("/me", response_model=ApiTokenPublic)
def me(operator: ViewerDep) -> ApiTokenPublic:
    """The token the request carries."""
    return ApiTokenPublic.model_validate(operator, from_attributes=True)


@router.post("/me/rotate", status_code=201, response_model=ApiTokenCreated)
def rotate_me(
    operator: ViewerDep, session: SessionDep, body: ApiTokenRotate | None = None
) -> ApiTokenCreated:
    """Replace the token the request carries: a new secret now, the old one stops working."""
    days = body.expires_in_days if body else DEFAULT_TOKEN_DAYS
    return _created(*crud.rotate_api_token(session, token=operator, expires_in=_term(days)))


@router.post("/tokens", status_code=201, response_model=ApiTokenCreated)
def create_token(body: ApiTokenCreate, session: SessionDep, _admin: AdminDep) -> ApiTokenCreated:
    """A new operator token; its secret appears in this response only."""
    return _created(
        *crud.create_api_token(
            session, name=body.name, role=body.role, expires_in=_term(body.expires_in_days)
        )
    )


@router.get("/tokens", response_model=list[ApiTokenPublic])
def list_tokens(session: SessionDep, _admin: AdminDep) -> list[ApiTokenPublic]:
    """Every operator token (never the secrets)."""
    return [
        ApiTokenPublic.model_validate(t, from_attributes=True)
        for t in crud.list_api_tokens(session)
    ]


@router.post("/tokens/{token_id}/rotate", status_code=201, response_model=ApiTokenCreated)
def rotate_token(
    token_id: TokenId, session: SessionDep, _admin: AdminDep, body: ApiTokenRotate | None = None
) -> ApiTokenCreated:
    """A new token with the same name and role; the old one is revoked at once."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise ApiError(404, "token_not_found", f"no API token with id {token_id}")
    if token.revoked_at is not None:
        raise ApiError(409, "token_revoked", f"API token {token_id} is revoked; create a new one")
    days = body.expires_in_days if body else DEFAULT_TOKEN_DAYS
    return _created(*crud.rotate_api_token(session, token=token, expires_in=_term(days)))


@router.delete("/tokens/{token_id}", response_model=ApiTokenPublic)
def revoke_token(token_id: TokenId, session: SessionDep, _admin: AdminDep) -> ApiTokenPublic:
    """Revoke a token; requests with it get 401 from now on."""
    token = crud.revoke_api_token(session, token_id=token_id)
    if token is None:
        raise ApiError(404, "token_not_found", f"no API token with id {token_id}")
    return ApiTokenPublic.model_validate(token, from_attributes=True)
