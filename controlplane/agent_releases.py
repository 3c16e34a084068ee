"""Agent releases in the registry: signed release directories kept under the data directory.

`import_release` verifies a release directory (release.json signed by a trusted key, every
file's sha256) and copies it to `{data_dir}/agent-releases/{version}/`; devices download
it from `/api/v1/agent-releases/{version}/...` with their artifact token, like models.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from controlplane.core.config import Settings
from controlplane.errors import ApiError, ImportRefused, ModelVersionExists
from controlplane.signing_key import SigningIdentity
from models.agent_release import (
    RELEASE_FILE,
    RELEASE_SIGNATURE_FILE,
    AgentReleaseManifest,
    verify_release_dir,
)
from models.errors import ModelsError
from models.files import safe_relative_path


def releases_dir(settings: Settings) -> Path:
    """Where imported agent releases live."""
    return settings.data_dir / "agent-releases"


def release_url(settings: Settings, version: str) -> str:
    """The URL devices fetch a release's release.json from."""
    return f"{settings.public_url}/api/v1/agent-releases/{version}/{RELEASE_FILE}"


def import_release(settings: Settings, signing: SigningIdentity, source: Path) -> str:
    """Verify and copy one release directory into the registry; its version."""
    try:
        manifest = verify_release_dir(source, signing.trusted)
    except (ModelsError, OSError) as exc:
        raise ImportRefused(f"{source}: not a valid signed agent release: {exc}") from exc
    target = releases_dir(settings) / manifest.version
    if target.exists():
        raise ModelVersionExists(f"agent release {manifest.version} is already imported")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "files").mkdir(parents=True)
    for name in (RELEASE_FILE, RELEASE_SIGNATURE_FILE):
        shutil.copyfile(source / name, partial / name)
    for entry in manifest.files:
        shutil.copyfile(source / entry.path, partial / "files" / entry.path)
    partial.rename(target)
    return manifest.version


def get_release(settings: Settings, version: str) -> AgentReleaseManifest | None:
    """The imported release's manifest, or None."""
    if not version or "/" in version or version.startswith("."):
        return None
    try:
        text = (releases_dir(settings) / version / RELEASE_FILE).read_text(encoding="utf-8")
    except OSError:
        return None
    return AgentReleaseManifest.model_validate_json(text)


def list_releases(settings: Settings) -> list[AgentReleaseManifest]:
    """Every imported release, by version name."""
    root = releases_dir(settings)
    if not root.is_dir():
        return []
    found = [get_release(settings, p.name) for p in sorted(root.iterdir()) if p.is_dir()]
    return [r for r in found if r is not None]


def release_path(settings: Settings, version: str, name: str) -> Path:
    """A file of an imported release (release.json, release.sig or files/...), or a 404."""
    manifest = get_release(settings, version)
    if manifest is None:
        raise ApiError(404, "release_not_found", f"no agent release {version}; import it first")
    if name in (RELEASE_FILE, RELEASE_SIGNATURE_FILE):
        return releases_dir(settings) / version / name
    rel = str(safe_relative_path(name.removeprefix("files/")))
    if not name.startswith("files/") or rel not in {f.path for f in manifest.files}:
        raise ApiError(404, "file_not_found", f"agent release {version} lists no file {name!r}")
    return releases_dir(settings) / version / "files" / rel
