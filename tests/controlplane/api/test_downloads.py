"""A device may hold only DOWNLOADS_PER_DEVICE artifact downloads open at once."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from controlplane import crud
from controlplane.api.downloads import DOWNLOADS_PER_DEVICE, OpenDownloads
from controlplane.db_models import Role
from controlplane.errors import ApiError
from tests.controlplane.helpers import bearer, enroll, make_model_dir
from tests.controlplane.live import sqlite_control_plane
from tests.controlplane.test_auth import assert_error
from tests.support.polling import wait_until

BIG = 32 * 2**20  # larger than the socket buffers: a download left unread stays open


def test_open_downloads_are_counted_per_device_and_closed_once() -> None:
    downloads = OpenDownloads(per_device=2)
    first, _second = downloads.open("dev-a"), downloads.open("dev-a")
    with pytest.raises(ApiError) as refused:
        downloads.open("dev-a")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"]
    downloads.open("dev-b")  # another device has its own count
    first()
    first()  # closing twice frees one place, not two
    assert downloads.count("dev-a") == 1
    downloads.open("dev-a")
    with pytest.raises(ApiError):
        downloads.open("dev-a")


def test_a_device_past_its_open_downloads_gets_429_until_one_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_control_plane(tmp_path, monkeypatch) as server:
        with Session(server.engine) as session:
            _row, admin = crud.create_api_token(session, name="admin", role=Role.admin)
        model_dir = make_model_dir(tmp_path, Ed25519PrivateKey.generate(), payload=b"x" * BIG)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = {"path": str(model_dir), "resign": True}
            imported = http.post("/api/v1/models/import", json=body, headers=bearer(admin))
            assert imported.status_code == 201, imported.text
            devices = [enroll(http, bearer(admin)) for _ in range(2)]  # type: ignore[arg-type]
            url = "/api/v1/artifacts/tiny/1.0.0/files/model.gguf"
            auth = [bearer(d["artifacts"]["token"]) for d in devices]
            downloads: OpenDownloads = server.app.state.downloads
            mine = devices[0]["device_id"]
            with ExitStack() as open_streams:
                streams = [
                    open_streams.enter_context(http.stream("GET", url, headers=auth[0]))
                    for _ in range(DOWNLOADS_PER_DEVICE)
                ]
                assert all(s.status_code == 200 for s in streams)
                refused = http.get(url, headers=auth[0])
                assert_error(refused, 429, "too_many_downloads")
                assert int(refused.headers["retry-after"]) >= 1
                ranged = http.get(url, headers={**auth[1], "Range": "bytes=0-9"})
                assert ranged.content == b"x" * 10  # the other device is not held back
                streams[0].close()  # the client leaves mid-body: its place is freed
                wait_until(lambda: downloads.count(mine) == DOWNLOADS_PER_DEVICE - 1, "freed")
                assert http.get(url, headers={**auth[0], "Range": "bytes=0-0"}).status_code == 206
            wait_until(lambda: downloads.count(mine) == 0, "every download closed")
            assert http.get(url, headers=auth[0]).content == b"x" * BIG  # whole, once more
