"""A device's view over real HTTP: enroll, then fetch and resume artifacts with the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.keys import load_public_keys
from models.store import ArtifactStore
from tests.controlplane.helpers import bearer, make_model_dir


def test_device_enrolls_and_resumes_a_download(
    cp_server: str, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    with httpx.Client(base_url=cp_server) as http:
        model_dir = make_model_dir(tmp_path / "src", Ed25519PrivateKey.generate())
        imported = http.post(
            "/api/v1/models/import",
            json={"path": str(model_dir), "resign": True},
            headers=admin_headers,
        )
        assert imported.status_code == 201, imported.text
        token = http.post(
            "/api/v1/enrollment-tokens", json={"labels": {"site": "lab"}}, headers=admin_headers
        ).json()["token"]
        enrolled = http.post(
            "/api/v1/enroll", json={"token": token, "hardware": {}, "agent_version": "0.1.0"}
        ).json()

    manifest_url = imported.json()["manifest_url"]
    assert manifest_url.startswith(f"{enrolled['artifacts']['base_url']}/")
    device_store = ArtifactStore(tmp_path / "device-store")
    auth = bearer(enrolled["artifacts"]["token"])
    base = manifest_url.rsplit("/", 1)[0]
    trusted = load_public_keys(enrolled["trusted_public_keys"])
    with httpx.Client() as http:
        manifest_bytes = http.get(manifest_url, headers=auth).content
        sig_bytes = http.get(f"{base}/manifest.sig", headers=auth).content
    manifest = device_store.add_manifest(manifest_bytes, sig_bytes, trusted)  # verifies

    entry = manifest.variants[0].files[0]
    weights = (model_dir / entry.path).read_bytes()
    partial = device_store.tmp / f"{entry.sha256}.partial"
    partial.write_bytes(weights[:1000])  # an interrupted earlier download
    path = device_store.fetch(f"{base}/files/{entry.path}", entry.sha256, entry.size, headers=auth)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
