"""Operator API tokens and one-time enrollment tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlmodel import Session, col, select

from controlplane.db_models import ApiToken, Device, EnrollmentToken, Role, utcnow
from controlplane.security import (
    API_TOKEN_PREFIX,
    ENROLLMENT_TOKEN_PREFIX,
    hash_token,
    new_secret,
)

_Holder = TypeVar("_Holder", ApiToken, Device)


def create_api_token(
    session: Session, *, name: str, role: Role, expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """A new operator token (expiring after `expires_in`, if given); the plain secret is
    returned once and never stored."""
    secret = new_secret(API_TOKEN_PREFIX)
    expires_at = utcnow() + expires_in if expires_in is not None else None
    token = ApiToken(name=name, role=role, token_hash=hash_token(secret), expires_at=expires_at)
    session.add(token)
    session.commit()
    session.refresh(token)
    return token, secret


def rotate_api_token(
    session: Session, *, token: ApiToken, expires_in: timedelta | None
) -> tuple[ApiToken, str]:
    """A new token with the old one's name and role; the old one is revoked in the same
    transaction. The new secret is returned once."""
    secret = new_secret(API_TOKEN_PREFIX)
    now = utcnow()
    fresh = ApiToken(
        name=token.name,
        role=token.role,
        token_hash=hash_token(secret),
        expires_at=now + expires_in if expires_in is not None else None,
    )
    token.revoked_at = now
    session.add_all([token, fresh])
    session.commit()
    session.refresh(fresh)
    return fresh, secret


def find_unrevoked(
    session: Session, table: type[_Holder], *, hash_column: Any, secret: str
) -> _Holder | None:
    """The not revoked row of `table` (API tokens, devices) whose `hash_column` holds the
    hash of `secret`."""
    found: _Holder | None = session.exec(
        select(table).where(col(hash_column) == hash_token(secret), col(table.revoked_at).is_(None))
    ).first()
    return found


def get_api_token_by_secret(session: Session, *, secret: str) -> ApiToken | None:
    """The not revoked token with this secret (the caller checks `expires_at`)."""
    return find_unrevoked(session, ApiToken, hash_column=ApiToken.token_hash, secret=secret)


def list_api_tokens(session: Session) -> list[ApiToken]:
    """Every operator token, oldest first."""
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))))


def revoke_api_token(session: Session, *, token_id: int) -> ApiToken | None:
    """Mark a token revoked; None when there is no such token."""
    token = session.get(ApiToken, token_id)
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        session.commit()
        session.refresh(token)
    return token


def create_enrollment_token(
    session: Session, *, labels: dict[str, str], ttl: timedelta, created_by: str
) -> tuple[EnrollmentToken, str]:
    """A one-time enrollment token that expires after `ttl`; the secret is returned once."""
    secret = new_secret(ENROLLMENT_TOKEN_PREFIX)
    token = EnrollmentToken(
        labels=labels,
        token_hash=hash_token(secret),
        created_by=created_by,
        expires_at=utcnow() + ttl,
    )
    session.add(token)
    session.commit()
    session.refresh(token)
    return token, secret


def list_enrollment_tokens(session: Session) -> list[EnrollmentToken]:
    """Every enrollment token, newest first."""
    return list(session.exec(select(EnrollmentToken).order_by(col(EnrollmentToken.id).desc())))


def claim_enrollment_token(
    session: Session, *, secret: str, now: datetime | None = None
) -> EnrollmentToken | None:
    """Mark the token used if it is unused and unexpired; one caller wins a race.

    Does not commit: the caller commits together with the device it creates.
    """
    now = now or utcnow()
    token_hash = hash_token(secret)
    result = session.execute(
        update(EnrollmentToken)
        .where(
            col(EnrollmentToken.token_hash) == token_hash,
            col(EnrollmentToken.used_at).is_(None),
            col(EnrollmentToken.expires_at) > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    token: EnrollmentToken = session.exec(
        select(EnrollmentToken).where(col(EnrollmentToken.token_hash) == token_hash)
    ).one()
    return token
