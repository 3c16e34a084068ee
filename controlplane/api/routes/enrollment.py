"""Enrollment tokens (operators create them) and device enrollment (devices use them)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends

from controlplane import crud
from controlplane.api.deps import OperatorDep, SessionDep, SettingsDep, SigningDep
from controlplane.api.rate_limit import limit_enrollment
from controlplane.db_models import (
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
)
from controlplane.enrollment import enroll_device
from controlplane.errors import ApiError
from models.protocol import EnrollmentRequest, EnrollmentResponse

router = APIRouter(tags=["enrollment"])


@router.post("/enrollment-tokens", status_code=201, response_model=EnrollmentTokenCreated)
def create_enrollment_token(
    body: EnrollmentTokenCreate, session: SessionDep, settings: SettingsDep, operator: OperatorDep
) -> EnrollmentTokenCreated:
    """A one-time token that enrolls one device with these labels; shown once."""
    ttl = timedelta(seconds=body.ttl_seconds)
    if ttl > settings.enrollment_ttl_max:
        raise ApiError(
            422,
            "validation_error",
            f"ttl_seconds may be at most {int(settings.enrollment_ttl_max.total_seconds())}",
        )
    token, secret = crud.create_enrollment_token(
        session, labels=body.labels, ttl=ttl, created_by=operator.name
    )
    public = EnrollmentTokenPublic.model_validate(token, from_attributes=True)
    return EnrollmentTokenCreated(**public.model_dump(), token=secret)


@router.get("/enrollment-tokens", response_model=list[EnrollmentTokenPublic])
def list_enrollment_tokens(session: SessionDep, _op: OperatorDep) -> list[EnrollmentTokenPublic]:
    """Enrollment tokens, newest first (never the secrets)."""
    return [
        EnrollmentTokenPublic.model_validate(t, from_attributes=True)
        for t in crud.list_enrollment_tokens(session)
    ]


@router.post(
    "/enroll",
    status_code=201,
    response_model=EnrollmentResponse,
    dependencies=[Depends(limit_enrollment)],
)
def enroll(
    body: EnrollmentRequest, session: SessionDep, settings: SettingsDep, signing: SigningDep
) -> EnrollmentResponse:
    """Trade a one-time enrollment token for the device's credentials (docs/controlplane.md)."""
    return enroll_device(session, settings=settings, signing=signing, request=body)
