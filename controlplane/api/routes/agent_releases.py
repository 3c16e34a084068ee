"""Agent releases: the list for operators, the files for enrolled devices."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from controlplane.agent_releases import list_releases, release_path
from controlplane.api.deps import CurrentDevice, SettingsDep, ViewerDep
from controlplane.api.ranges import ranged_file
from models.agent_release import AgentReleaseManifest

router = APIRouter(prefix="/agent-releases", tags=["agent releases"])


@router.get("", response_model=list[AgentReleaseManifest])
def agent_releases(settings: SettingsDep, _viewer: ViewerDep) -> list[AgentReleaseManifest]:
    """Imported agent releases (`edgefleet-cp agent-releases import DIR`)."""
    return list_releases(settings)


@router.get("/{version}/{name:path}")
def agent_release_file(
    version: str, name: str, request: Request, settings: SettingsDep, _device: CurrentDevice
) -> Response:
    """release.json, release.sig or files/{wheel} of one release; Range requests give 206."""
    path = release_path(settings, version, name)
    return ranged_file(request, path, etag=f"{version}/{name}")
