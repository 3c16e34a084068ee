"""The model registry: import a signed model directory, list and get models."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from sqlmodel import Session

from controlplane import crud
from controlplane.api.deps import OperatorDep, SessionDep, SettingsDep, SigningDep, ViewerDep
from controlplane.core.config import Settings
from controlplane.db_models import ModelImport, ModelPublic, ModelVersionPublic
from controlplane.enrollment import artifacts_url
from controlplane.errors import ApiError
from controlplane.registry import import_model

router = APIRouter(prefix="/models", tags=["models"])


@router.post("/import", status_code=201, response_model=ModelVersionPublic)
def import_model_dir(
    body: ModelImport,
    session: SessionDep,
    settings: SettingsDep,
    signing: SigningDep,
    _op: OperatorDep,
) -> ModelVersionPublic:
    """Verify a model directory on this host and add it to the registry (resign: our key)."""
    manifest, _row = import_model(
        session,
        settings=settings,
        signing=signing,
        model_dir=Path(body.path),
        resign=body.resign,
    )
    return _version(session, settings, manifest.name, manifest.version)


def _version(session: Session, settings: Settings, name: str, version: str) -> ModelVersionPublic:
    found = crud.get_model_version(session, name=name, version=version)
    if found is None:
        raise ApiError(404, "model_not_found", f"no model {name}:{version}")
    return crud.model_version_to_public(*found, artifacts_url=artifacts_url(settings))


@router.get("", response_model=list[ModelPublic])
def list_models(session: SessionDep, _viewer: ViewerDep) -> list[ModelPublic]:
    """Every model with its versions."""
    return crud.list_models(session)


@router.get("/{name}", response_model=ModelPublic)
def get_model(name: str, session: SessionDep, _viewer: ViewerDep) -> ModelPublic:
    """One model with its versions."""
    found = crud.list_models(session, name=name)
    if not found:
        raise ApiError(404, "model_not_found", f"no model {name!r}; import it first")
    return found[0]


@router.get("/{name}/{version}", response_model=ModelVersionPublic)
def get_model_version(
    name: str, version: str, session: SessionDep, settings: SettingsDep, _viewer: ViewerDep
) -> ModelVersionPublic:
    """One version with its manifest and the URL devices download it from."""
    return _version(session, settings, name, version)
