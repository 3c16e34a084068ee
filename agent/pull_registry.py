"""Pulling `NAME:VERSION` from the control plane's registry (agent/model_pull.py's first kind).

The manifest and its signature are fetched with the artifact token enrollment gave and verified
outside the store; selection picks this device's variant (its memory check is selection's:
`memory_bytes x 1.15 + 256 MiB` against what hwprobe reports); the store's disk must hold the
variant's files not stored yet. Only then is the manifest recorded in the store and the files
downloaded, each checked against its sha256 as it arrives.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from agent.errors import AgentError
from agent.model_pull import HTTP_TIMEOUT_S, Emit, ModelPull, PullError, PullPlan
from models.errors import ModelsError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.fleet.enroll import Enrollment
    from models.manifest import Manifest


def plan_registry_pull(job: ModelPull) -> PullPlan:
    """Check the name, enrollment, manifest, signature and variant; the plan that fetches it."""
    from agent.engines.registry import installed_engines
    from agent.selection import select_variant

    enrollment = _enrollment(job)
    model, _, version = job.name.partition(":")
    if not version or version == "latest":
        raise PullError(
            f"name the version to pull from the control plane's registry: {model}:VERSION "
            "(the registry has no 'latest' for devices)"
        )
    base = f"{enrollment.artifacts.base_url.rstrip('/')}/{quote(model)}/{quote(version)}"
    headers = enrollment.artifact_headers()
    manifest_json = _get(f"{base}/manifest.json", headers, f"model {job.name}")
    signature = _get(f"{base}/manifest.sig", headers, f"signature of {job.name}")
    trusted = enrollment.trusted_keys()
    manifest = _verified(job.name, manifest_json, signature, trusted)
    if (manifest.name, manifest.version) != (model, version):
        raise PullError(f"the registry answered {manifest.ref} for {job.name}", 500)
    try:
        selection = select_variant(manifest, job.profile(), installed_engines())
    except AgentError as exc:
        raise PullError(f"no variant of {manifest.ref} fits this device: {exc}") from exc
    variant = manifest.variant(selection.variant_id)

    def record() -> None:  # a version already stored with another manifest is refused here
        try:
            job.store.add_manifest(manifest_json, signature, trusted)
        except ModelsError as exc:
            raise PullError(f"manifest of {job.name} rejected: {exc.reason}") from exc

    def download(emit: Emit) -> Path:
        return _download_variant(job, manifest, variant.id, base, headers, emit)

    return PullPlan(
        what=f"model {manifest.ref} ({variant.id})",
        to_fetch=lambda: job.missing_bytes((f.sha256, f.size) for f in variant.files),
        download=download,
        record=record,
    )


def _verified(
    name: str, manifest_json: bytes, signature: bytes, trusted: list[Ed25519PublicKey]
) -> Manifest:
    """The manifest, once its signature checks out; verified in a scratch folder, not the store."""
    from models.signing import verify_manifest

    with tempfile.TemporaryDirectory(prefix="edgefleet-pull-") as scratch:
        (Path(scratch) / MANIFEST_FILE).write_bytes(manifest_json)
        (Path(scratch) / SIGNATURE_FILE).write_bytes(signature)
        try:
            return verify_manifest(Path(scratch), trusted)
        except ModelsError as exc:
            raise PullError(f"manifest of {name} rejected: {exc.reason}") from exc


def _enrollment(job: ModelPull) -> Enrollment:
    from agent.fleet.enroll import EnrollmentError, load_enrollment

    try:
        enrollment = load_enrollment(job.settings.data_dir)
    except EnrollmentError as exc:
        raise PullError(str(exc), 500) from exc
    if enrollment is None:
        raise PullError(
            f"{job.name!r} is not a path or URL, and this agent is not enrolled with a "
            "control plane: pull a .gguf path or URL (with #sha256=<hex>), or enroll the agent"
        )
    return enrollment


def _download_variant(
    job: ModelPull,
    manifest: Manifest,
    variant_id: str,
    base: str,
    headers: dict[str, str],
    emit: Emit,
) -> Path:
    from agent.fleet.slots import slot_key

    for entry in manifest.variant(variant_id).files:
        url = f"{base}/files/{quote(entry.path)}"
        job.fetch(url, entry.sha256, entry.size, emit, headers)
    emit({"status": "verifying sha256 digest"})
    dest = job.settings.data_dir / "models" / slot_key(manifest.name, manifest.version, variant_id)
    if not dest.is_dir():
        try:
            job.store.materialize(manifest, variant_id, dest)
        except ModelsError as exc:
            raise PullError(f"cannot lay out {manifest.ref}: {exc.reason}", 500) from exc
    return dest


def _get(url: str, headers: dict[str, str], what: str) -> bytes:
    """GET a small document from the control plane, its failures worded for the API."""
    import httpx

    try:
        resp = httpx.get(url, headers=headers, timeout=HTTP_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise PullError(f"cannot reach the control plane for {what}: {exc}", 500) from exc
    if resp.status_code == 404:
        raise PullError(f"{what} is not in the control plane's registry", 404)
    if resp.status_code in (401, 403):
        raise PullError(
            f"the control plane refused this device's artifact token (HTTP "
            f"{resp.status_code}); enroll the agent again",
            403,
        )
    if resp.status_code != 200:
        raise PullError(f"the control plane answered HTTP {resp.status_code} for {what}", 500)
    return resp.content
