"""Importing a model the browser uploads: a signed model directory packed as .tar.gz or .zip,
or a .gguf as it is; streamed to the data dir, size-limited, operator role and CSRF."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane import crud
from controlplane.core.config import Settings
from controlplane.db_models import Role
from controlplane.main import create_app
from controlplane.signing_key import load_signing_identity
from tests.controlplane.dashboard.browser import chromium_page, needs_chromium
from tests.controlplane.dashboard.test_actions import sign_in
from tests.controlplane.helpers import make_model_dir
from tests.controlplane.live import sqlite_control_plane


def pack(model_dir: Path, packing: str) -> Path:
    """The model directory as the operator would upload it: .tar.gz with its folder on top,
    or .zip with the files at its root."""
    if packing == "zip":
        return Path(shutil.make_archive(str(model_dir), "zip", root_dir=model_dir))
    archive = model_dir.parent / f"{model_dir.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_dir, arcname=model_dir.name)
    return archive


def upload(client: TestClient, path: Path, **fields: str) -> Any:
    """POST the file as the models page's upload form does; the page it lands on."""
    with path.open("rb") as fh:
        return client.post("/models/upload", data=fields, files={"file": (path.name, fh)})


def registered(client: TestClient, name: str, version: str) -> bool:
    app = client.app
    with Session(app.state.engine) as session:  # type: ignore[attr-defined]
        return crud.get_model_version(session, name=name, version=version) is not None


@pytest.fixture
def csrf(cp_client: TestClient, make_token: Callable[[Role], str]) -> str:
    """An operator signed in to the dashboard; the session's CSRF token."""
    return sign_in(cp_client, make_token(Role.operator))


def leftovers(settings: Settings) -> list[Path]:
    uploads = settings.data_dir / "uploads"
    return list(uploads.rglob("*")) if uploads.exists() else []


@pytest.mark.parametrize("packing", ["tar.gz", "zip"])
def test_a_packed_model_directory_is_imported_and_nothing_stays_behind(
    cp_client: TestClient,
    cp_settings: Settings,
    csrf: str,
    make_token: Callable[[Role], str],
    tmp_path: Path,
    packing: str,
) -> None:
    model_dir = make_model_dir(tmp_path / "src", Ed25519PrivateKey.generate(), version="3.0")
    bundle = pack(model_dir, packing)

    untrusted = upload(cp_client, bundle, csrf=csrf)
    assert "not imported" in untrusted.text and "resign" in untrusted.text
    assert not registered(cp_client, "tiny", "3.0")

    page = upload(cp_client, bundle, csrf=csrf, resign="true")
    assert page.status_code == 200 and f"imported tiny:3.0 from {bundle.name}" in page.text
    assert registered(cp_client, "tiny", "3.0")
    again = upload(cp_client, bundle, csrf=csrf, resign="true")
    assert "already registered" in again.text
    assert leftovers(cp_settings) == []
    sign_in(cp_client, make_token(Role.admin))
    assert "upload_model" in cp_client.get("/audit").text


def test_what_is_not_a_model_is_refused_with_what_to_send(
    cp_client: TestClient, cp_settings: Settings, csrf: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert "upload a .gguf file" in upload(cp_client, notes, csrf=csrf).text
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    assert "holds no manifest.json" in upload(cp_client, empty, csrf=csrf).text
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    assert "cannot be unpacked" in upload(cp_client, broken, csrf=csrf).text
    no_file = cp_client.post(
        "/models/upload", data={"csrf": csrf}, files={"other": ("x.txt", b"x")}
    )
    assert "send one file" in no_file.text
    assert leftovers(cp_settings) == []


def test_uploading_takes_the_operator_role_and_the_forms_csrf_token(
    cp_client: TestClient,
    cp_settings: Settings,
    make_token: Callable[[Role], str],
    tmp_path: Path,
) -> None:
    bundle = pack(make_model_dir(tmp_path / "src", Ed25519PrivateKey.generate()), "zip")
    viewer_csrf = sign_in(cp_client, make_token(Role.viewer))
    refused = upload(cp_client, bundle, csrf=viewer_csrf, resign="true")
    assert refused.status_code == 403 and "operator role" in refused.text
    assert 'id="upload-form"' not in cp_client.get("/models").text

    csrf = sign_in(cp_client, make_token(Role.operator))
    assert 'id="upload-form"' in cp_client.get("/models").text
    forged = upload(cp_client, bundle, resign="true")
    assert forged.status_code == 403 and "another site" in forged.text
    wrong = upload(cp_client, bundle, csrf="x" * 43, resign="true")
    assert wrong.status_code == 403
    assert not registered(cp_client, "tiny", "1.0.0")
    assert csrf and leftovers(cp_settings) == []


@pytest.mark.parametrize(
    ("payload", "refusal"),
    [
        # streamed past the limit
        (os.urandom(8 * 1024), "larger than the 4096 bytes this control plane accepts"),
        # a Content-Length over the limit: refused before the body is read
        (os.urandom(200 * 1024), "larger than the 4096 bytes this control plane accepts"),
        # small packed, large unpacked
        (b"\x01" * 64 * 1024, "unpacks to more than 4096 bytes"),
    ],
)
def test_an_upload_over_the_limit_is_refused_and_removed(
    cp_settings: Settings,
    make_token: Callable[[Role], str],
    tmp_path: Path,
    payload: bytes,
    refusal: str,
) -> None:
    settings = cp_settings.model_copy(update={"model_upload_max_bytes": 4096})
    key = Ed25519PrivateKey.generate()
    bundle = pack(make_model_dir(tmp_path / "src", key, payload=payload), "zip")
    with TestClient(create_app(settings)) as client:
        csrf = sign_in(client, make_token(Role.operator))
        page = upload(client, bundle, csrf=csrf, resign="true")
        assert refusal in page.text
        assert not registered(client, "tiny", "1.0.0")
    assert leftovers(settings) == []


def test_a_gguf_is_imported_as_it_is_signed_with_the_control_planes_key(
    cp_client: TestClient, cp_settings: Settings, csrf: str, smollm2_gguf: Path
) -> None:
    pytest.importorskip("gguf")
    page = upload(cp_client, smollm2_gguf, csrf=csrf)
    assert "imported smollm2-135m-instruct:sha-" in page.text, page.text[-2000:]
    with Session(cp_client.app.state.engine) as session:  # type: ignore[attr-defined]
        [model] = crud.list_models(session, name="smollm2-135m-instruct")
        found = crud.get_model_version(session, name=model.name, version=model.versions[0])
    assert found is not None
    _model, version = found
    assert version.key_id == load_signing_identity(cp_settings).key_id
    assert json.loads(version.manifest_json)["variants"][0]["format"] == "gguf"
    assert leftovers(cp_settings) == []


@needs_chromium
def test_the_models_page_form_uploads_from_a_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = pack(make_model_dir(tmp_path / "src", Ed25519PrivateKey.generate()), "tar.gz")
    with sqlite_control_plane(tmp_path, monkeypatch) as server:
        with Session(server.engine) as session:
            _row, operator = crud.create_api_token(session, name="olga", role=Role.operator)
        problems: list[str] = []
        with chromium_page(problems) as page:
            page.goto(f"{server.url}/login")
            page.fill("#token", operator)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server.url}/")
            page.goto(f"{server.url}/models")
            page.set_input_files("#upload-form input[type=file]", str(bundle))
            page.check("#upload-form input[name=resign]")
            page.click("#upload-form button[type=submit]")
            page.wait_for_url(f"{server.url}/models")
            assert "imported tiny:1.0.0" in page.inner_text("#flash")
            assert "1.0.0" in page.inner_text("#model-table")
        assert problems == []
        assert leftovers(server.settings) == []
