"""Model registry: import signed directories, refuse tampered ones, serve artifacts with Range."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from controlplane.db_models import Role
from models.manifest import Manifest
from models.signing import ManifestSignature
from tests.controlplane.helpers import bearer, enroll, make_model_dir
from tests.controlplane.test_auth import assert_error


def _cp_key(client: TestClient) -> Ed25519PrivateKey:
    key: Ed25519PrivateKey = client.app.state.signing.private_key  # type: ignore[attr-defined]
    return key


def _import(client: TestClient, headers: dict[str, str], path: Path, resign: bool = False) -> Any:
    return client.post(
        "/api/v1/models/import", json={"path": str(path), "resign": resign}, headers=headers
    )


def test_import_signed_by_control_plane_key(
    cp_client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    model_dir = make_model_dir(tmp_path, _cp_key(cp_client))
    resp = _import(cp_client, admin_headers, model_dir)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "tiny" and body["version"] == "1.0.0"
    assert body["size_bytes"] == sum(
        p.stat().st_size for p in model_dir.iterdir() if p.name in {"model.gguf", "tokenizer.json"}
    )
    assert body["manifest_url"] == "http://testserver/api/v1/artifacts/tiny/1.0.0/manifest.json"
    listed = cp_client.get("/api/v1/models", headers=admin_headers).json()
    assert listed[0]["name"] == "tiny" and listed[0]["versions"] == ["1.0.0"]
    assert cp_client.get("/api/v1/models/tiny/1.0.0", headers=admin_headers).status_code == 200
    assert_error(_import(cp_client, admin_headers, model_dir), 409, "model_version_exists")
    assert_error(cp_client.get("/api/v1/models/nope", headers=admin_headers), 404)


def test_foreign_signature_needs_resign(
    cp_client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    model_dir = make_model_dir(tmp_path, Ed25519PrivateKey.generate())
    refused = _import(cp_client, admin_headers, model_dir)
    assert_error(refused, 400, "model_rejected")
    assert "resign" in refused.json()["error"]["message"]
    resp = _import(cp_client, admin_headers, model_dir, resign=True)
    assert resp.status_code == 201, resp.text
    assert resp.json()["key_id"] == cp_client.app.state.signing.key_id  # type: ignore[attr-defined]


def _raise_context_length(model_dir: Path) -> None:
    path = model_dir / "manifest.json"
    path.write_text(path.read_text().replace('"context_length": 256', '"context_length": 9'))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda d: (d / "model.gguf").write_bytes(b"evil" * 4096), "sha256 mismatch"),
        (lambda d: (d / "tokenizer.json").unlink(), "missing"),
        (
            _raise_context_length,
            "signature does not match",
        ),
        (lambda d: (d / "manifest.sig").unlink(), "unsigned"),
    ],
    ids=["file", "missing-file", "manifest", "signature"],
)
def test_tampered_model_is_refused_with_the_reason(
    cp_client: TestClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    tamper: Callable[[Path], object],
    reason: str,
) -> None:
    model_dir = make_model_dir(tmp_path, _cp_key(cp_client))
    tamper(model_dir)
    resp = _import(cp_client, admin_headers, model_dir, resign=True)
    assert_error(resp, 400, "model_rejected")
    assert reason in resp.json()["error"]["message"]
    assert cp_client.get("/api/v1/models", headers=admin_headers).json() == []


def test_import_needs_operator_and_a_directory(
    cp_client: TestClient, make_token: Callable[[Role], str], tmp_path: Path
) -> None:
    viewer = bearer(make_token(Role.viewer))
    assert_error(_import(cp_client, viewer, tmp_path), 403)
    operator = bearer(make_token(Role.operator))
    assert_error(_import(cp_client, operator, tmp_path / "nope"), 400, "model_rejected")


def test_artifacts_serve_enrolled_devices_with_ranges(
    cp_client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    model_dir = make_model_dir(tmp_path, Ed25519PrivateKey.generate())
    assert _import(cp_client, admin_headers, model_dir, resign=True).status_code == 201
    device = enroll(cp_client, admin_headers)
    auth = bearer(device["artifacts"]["token"])
    base = "/api/v1/artifacts/tiny/1.0.0"

    manifest = Manifest.model_validate_json(
        cp_client.get(f"{base}/manifest.json", headers=auth).content
    )
    sig = ManifestSignature.model_validate_json(
        cp_client.get(f"{base}/manifest.sig", headers=auth).content
    )
    assert sig.public_key == device["signing_public_key"]
    pub = _cp_key(cp_client).public_key()
    pub.verify(base64.b64decode(sig.signature), manifest.canonical_bytes())  # raises if bad

    weights = (model_dir / "model.gguf").read_bytes()
    sha = hashlib.sha256(weights).hexdigest()
    full = cp_client.get(f"{base}/files/model.gguf", headers=auth)
    assert full.status_code == 200 and full.content == weights
    assert full.headers["etag"] == f'"{sha}"' and full.headers["accept-ranges"] == "bytes"

    part = cp_client.get(f"{base}/files/model.gguf", headers={**auth, "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == weights[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(weights)}"
    rest = cp_client.get(f"{base}/files/model.gguf", headers={**auth, "Range": "bytes=100-"})
    assert rest.status_code == 206 and part.content + rest.content == weights
    tail = cp_client.get(f"{base}/files/model.gguf", headers={**auth, "Range": "bytes=-10"})
    assert tail.content == weights[-10:]
    stale = cp_client.get(
        f"{base}/files/model.gguf", headers={**auth, "Range": "bytes=100-", "If-Range": '"old"'}
    )
    assert stale.status_code == 200 and stale.content == weights
    for bad in (f"bytes={len(weights)}-", "bytes=50-10", "bytes=x-y", "items=0-1"):
        resp = cp_client.get(f"{base}/files/model.gguf", headers={**auth, "Range": bad})
        assert_error(resp, 416, "range_not_satisfiable")
        assert resp.headers["content-range"] == f"bytes */{len(weights)}"

    assert_error(cp_client.get(f"{base}/files/nope.bin", headers=auth), 404, "file_not_found")
    assert_error(cp_client.get("/api/v1/artifacts/tiny/9/manifest.json", headers=auth), 404)
    assert_error(cp_client.get(f"{base}/manifest.json", headers=admin_headers), 401)
    assert_error(cp_client.get(f"{base}/manifest.json"), 401)
    cp_client.post(f"/api/v1/devices/{device['device_id']}/revoke", headers=admin_headers)
    assert_error(
        cp_client.get(f"{base}/files/model.gguf", headers=auth), 401, "invalid_device_token"
    )
