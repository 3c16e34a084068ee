"""Agent releases: the list for operators, the files for enrolled devices."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from sqlmodel import Field, SQLModel

from controlplane.agent_releases import get_release, import_release, list_releases, release_path
from controlplane.api.deps import CurrentDevice, OperatorDep, SettingsDep, SigningDep, ViewerDep
from controlplane.api.downloads import open_download
from controlplane.api.ranges import ranged_file
from models.agent_release import AgentReleaseManifest

router = APIRouter(prefix="/agent-releases", tags=["agent releases"])


@router.get("", response_model=list[AgentReleaseManifest])
def agent_releases(settings: SettingsDep, _viewer: ViewerDep) -> list[AgentReleaseManifest]:
    """Imported agent releases (`edgefleet-cp agent-releases import DIR`)."""
    return list_releases(settings)


class AgentReleaseImport(SQLModel):
    """A release directory on the control plane host (release.json, release.sig, wheels)."""

    path: str = Field(min_length=1, max_length=4096)


@router.post("/import", status_code=201, response_model=AgentReleaseManifest)
def import_agent_release(
    body: AgentReleaseImport, settings: SettingsDep, signing: SigningDep, _op: OperatorDep
) -> AgentReleaseManifest:
    """Verify a signed release directory and add it to the registry."""
    version = import_release(settings, signing, Path(body.path))
    release = get_release(settings, version)
    assert release is not None
    return release


@router.get("/{version}/{name:path}")
def agent_release_file(
    version: str, name: str, request: Request, settings: SettingsDep, device: CurrentDevice
) -> Response:
    """release.json, release.sig or files/{wheel} of one release; Range requests give 206;
    429 while the device has DOWNLOADS_PER_DEVICE open."""
    path = release_path(settings, version, name)
    close = open_download(request, device.id)
    return ranged_file(request, path, etag=f"{version}/{name}", on_close=close)
