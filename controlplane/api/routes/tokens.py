"""Operator API tokens (admin) and who-am-I."""

from __future__ import annotations

from fastapi import APIRouter

from controlplane import crud
from controlplane.api.deps import AdminDep, SessionDep, ViewerDep
from controlplane.db_models import ApiTokenCreate, ApiTokenCreated, ApiTokenPublic
from controlplane.errors import ApiError

router = APIRouter(tags=["tokens"])


@router.get("/me", response_model=ApiTokenPublic)
def me(operator: ViewerDep) -> ApiTokenPublic:
    """The token the request carries."""
    return ApiTokenPublic.model_validate(operator, from_attributes=True)


@router.post("/tokens", status_code=201, response_model=ApiTokenCreated)
def create_token(body: ApiTokenCreate, session: SessionDep, _admin: AdminDep) -> ApiTokenCreated:
    """A new operator token; its secret appears in this response only."""
    token, secret = crud.create_api_token(session, name=body.name, role=body.role)
    public = ApiTokenPublic.model_validate(token, from_attributes=True)
    return ApiTokenCreated(**public.model_dump(), token=secret)


@router.get("/tokens", response_model=list[ApiTokenPublic])
def list_tokens(session: SessionDep, _admin: AdminDep) -> list[ApiTokenPublic]:
    """Every operator token (never the secrets)."""
    return [
        ApiTokenPublic.model_validate(t, from_attributes=True)
        for t in crud.list_api_tokens(session)
    ]


@router.delete("/tokens/{token_id}", response_model=ApiTokenPublic)
def revoke_token(token_id: int, session: SessionDep, _admin: AdminDep) -> ApiTokenPublic:
    """Revoke a token; requests with it get 401 from now on."""
    token = crud.revoke_api_token(session, token_id=token_id)
    if token is None:
        raise ApiError(404, "token_not_found", f"no API token with id {token_id}")
    return ApiTokenPublic.model_validate(token, from_attributes=True)
