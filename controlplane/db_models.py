"""SQLModel tables and API schemas of the core control plane (Alembic owns the schema)."""

from __future__ import annotations

import enum
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, StrictBool, StrictInt, field_validator
from sqlalchemy import JSON, BigInteger, Column, DateTime, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.protocol import utcnow as utcnow  # one clock for the whole control plane

LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
LABEL_VALUE = r"^[A-Za-z0-9._/-]{0,63}$"


def as_utc(value: datetime) -> datetime:
    """SQLite drops tzinfo; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _attach_utc(value: object) -> object:
    return as_utc(value) if isinstance(value, datetime) else value


# Times the API sends: always with their offset, also where SQLite gave them back naive.
UtcDateTime = Annotated[AwareDatetime, BeforeValidator(_attach_utc)]

DEFAULT_TOKEN_DAYS = 90  # operator tokens expire after this unless created with another term
MAX_TOKEN_DAYS = 3650


def optional_time() -> Any:
    """A nullable timezone-aware column that defaults to None."""
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Validate label keys and values (Kubernetes-like; no `,` or `=`)."""
    for key, value in labels.items():
        if not re.match(LABEL_KEY, key) or not re.match(LABEL_VALUE, value):
            raise ValueError(
                f"label {key}={value!r} is invalid: use letters, digits, '.', '_', '-', '/'"
            )
    return labels


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {"k": "v", "k2": "v2"}, checked by `check_labels`; ValueError if malformed."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label selector part {part!r}: use key=value")
        labels[key.strip()] = value.strip()
    return check_labels(labels)


class Role(str, enum.Enum):
    """Operator roles; each includes the ones below it."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        """Order for `at least this role` checks."""
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]


# --- operator API tokens ---------------------------------------------------------------
class ApiTokenBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role = Field(default=Role.viewer, sa_type=String(16))


def token_term(description: str) -> Any:
    """`expires_in_days` of a new operator token: DEFAULT_TOKEN_DAYS unless given; null: never."""
    return Field(default=DEFAULT_TOKEN_DAYS, ge=1, le=MAX_TOKEN_DAYS, description=description)


class ApiTokenCreate(ApiTokenBase):
    expires_in_days: StrictInt | None = token_term(
        "days until the token stops working; null: never"
    )


class ApiToken(ApiTokenBase, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = optional_time()
    expires_at: datetime | None = optional_time()


class TokenPublic(SQLModel):
    """What the API shows of every kind of token: its id and when it was made."""

    id: int
    created_at: UtcDateTime


class ApiTokenPublic(TokenPublic, ApiTokenBase):
    revoked_at: UtcDateTime | None = None
    expires_at: UtcDateTime | None = None


class ApiTokenCreated(ApiTokenPublic):
    token: str


# --- enrollment tokens -----------------------------------------------------------------
class EnrollmentTokenBase(SQLModel):
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class EnrollmentTokenCreate(EnrollmentTokenBase):
    ttl_seconds: StrictInt = Field(default=3600, gt=0, le=2**31 - 1)


class EnrollmentToken(EnrollmentTokenBase, table=True):
    __tablename__ = "enrollment_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    used_at: datetime | None = optional_time()
    device_id: str | None = None


class EnrollmentTokenPublic(TokenPublic, EnrollmentTokenBase):
    created_by: str
    expires_at: UtcDateTime
    used_at: UtcDateTime | None = None
    device_id: str | None = None


class EnrollmentTokenCreated(EnrollmentTokenPublic):
    token: str


# --- devices (what the agent sends to /enroll is models.protocol.EnrollmentRequest) -----
class DeviceBase(SQLModel):
    name: str = Field(default="", max_length=200)
    device_class: str = Field(default="", max_length=100, index=True)
    agent_version: str = Field(default="", max_length=100)


class DeviceUpdate(SQLModel):
    name: str | None = Field(default=None, max_length=200)
    labels: dict[str, str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_labels(value)


class Device(DeviceBase, table=True):
    __tablename__ = "device"

    id: str = Field(primary_key=True, max_length=64)
    hardware: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    online: bool = Field(default=False, index=True)
    last_seen: datetime | None = optional_time()
    active_model: str | None = Field(default=None, index=True, max_length=300)
    mqtt_password_hash: str = Field(max_length=300)
    artifact_token_hash: str = Field(index=True, unique=True, max_length=64)
    enrolled_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = optional_time()


class DeviceLabel(SQLModel, table=True):
    __tablename__ = "device_label"

    device_id: str = Field(
        foreign_key="device.id", primary_key=True, ondelete="CASCADE", max_length=64
    )
    key: str = Field(primary_key=True, max_length=63)
    value: str = Field(index=True, max_length=63)


class DevicePublic(DeviceBase):
    id: str
    labels: dict[str, str]
    hardware: dict[str, Any]
    state: dict[str, Any]
    online: bool
    last_seen: UtcDateTime | None
    active_model: str | None
    enrolled_at: UtcDateTime
    revoked: bool


# --- models ----------------------------------------------------------------------------
class Model(SQLModel, table=True):
    __tablename__ = "model"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ModelVersionBase(SQLModel):
    version: str = Field(max_length=100)
    key_id: str = Field(max_length=64)
    size_bytes: int = Field(default=0, sa_type=BigInteger)


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True, ondelete="CASCADE")
    manifest_json: str = Field(sa_type=Text)
    signature_json: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ModelImport(SQLModel):
    path: str = Field(min_length=1, description="model directory on the control plane host")
    resign: StrictBool = False


class ModelVersionPublic(ModelVersionBase):
    name: str
    created_at: UtcDateTime
    manifest: dict[str, Any]
    manifest_url: str


class ModelPublic(SQLModel):
    name: str
    created_at: UtcDateTime
    versions: list[str]
