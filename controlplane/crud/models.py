"""Model and ModelVersion rows of the registry."""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from controlplane.db_models import Model, ModelPublic, ModelVersion, ModelVersionPublic
from controlplane.errors import ModelVersionExists
from models.manifest import Manifest


def _registered(ref: str) -> str:
    return f"model {ref} is already registered; give the new build another version"


def create_model_version(
    session: Session,
    *,
    manifest: Manifest,
    manifest_json: str,
    signature_json: str,
    key_id: str,
) -> ModelVersion:
    """Record a model version (creating its model row); ModelVersionExists on a duplicate."""
    model = session.exec(select(Model).where(Model.name == manifest.name)).first()
    if model is None:
        model = Model(name=manifest.name)
        session.add(model)
        session.flush()
    assert model.id is not None
    existing = session.exec(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == manifest.version
        )
    ).first()
    if existing is not None:
        session.rollback()
        raise ModelVersionExists(_registered(manifest.ref))
    size = sum(f.size for f in {f.path: f for v in manifest.variants for f in v.files}.values())
    row = ModelVersion(
        model_id=model.id,
        version=manifest.version,
        key_id=key_id,
        size_bytes=size,
        manifest_json=manifest_json,
        signature_json=signature_json,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent import of the same version won
        session.rollback()
        raise ModelVersionExists(_registered(manifest.ref)) from exc
    session.refresh(row)
    return row


def get_model_version(
    session: Session, *, name: str, version: str
) -> tuple[Model, ModelVersion] | None:
    """The model and its version row, or None."""
    row = session.exec(
        select(Model, ModelVersion)
        .join(ModelVersion, col(ModelVersion.model_id) == col(Model.id))
        .where(Model.name == name, ModelVersion.version == version)
    ).first()
    return (row[0], row[1]) if row else None


def list_models(session: Session, *, name: str | None = None) -> list[ModelPublic]:
    """Models (optionally one by name) with their versions, oldest version first."""
    query = select(Model).order_by(col(Model.name))
    if name is not None:
        query = query.where(Model.name == name)
    models = list(session.exec(query))
    versions: dict[int, list[str]] = {m.id: [] for m in models if m.id is not None}
    for row in session.exec(
        select(ModelVersion)
        .where(col(ModelVersion.model_id).in_(list(versions)))
        .order_by(col(ModelVersion.id))
    ):
        versions[row.model_id].append(row.version)
    return [
        ModelPublic(name=m.name, created_at=m.created_at, versions=versions.get(m.id or 0, []))
        for m in models
    ]


def model_version_to_public(
    model: Model, version: ModelVersion, *, artifacts_url: str
) -> ModelVersionPublic:
    """The API view of a version, with the manifest URL devices download."""
    return ModelVersionPublic(
        name=model.name,
        version=version.version,
        key_id=version.key_id,
        size_bytes=version.size_bytes,
        created_at=version.created_at,
        manifest=json.loads(version.manifest_json),
        manifest_url=f"{artifacts_url}/{model.name}/{version.version}/manifest.json",
    )
