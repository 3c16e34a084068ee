"""The download step through an unreliable control plane: retries, resume, free disk."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.fleet.fetch_retry
from agent.capacity import DiskUsage
from agent.fleet.fetch_retry import RetryWindow
from agent.fleet.rollout_events import RolloutFailed
from agent.fleet.staging import fetch_bytes
from models.errors import DownloadError
from models.protocol import DesiredModel
from models.store import ArtifactStore
from tests.agent.fleet.nodes import Rig
from tests.e2e.fakes import publish_fake_model
from tests.support.http import serving

MODEL_SIZE = 300_000


@dataclass
class Faults:
    """What the registry server does wrong; every field is consumed as requests arrive."""

    fail_first: int = 0  # answer this many requests with 503
    fail_status: int = 503
    fail_only: str = ""  # only paths ending with this fail
    drop_file_after: int | None = None  # one-shot: close model.gguf after this many bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registry(ThreadingHTTPServer):
    """Serves a directory of published models over HTTP, with Range, and injected faults."""

    daemon_threads = True

    def __init__(self, root: Path, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root
        self.faults = Faults()

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{rel}"


class _Handler(BaseHTTPRequestHandler):
    server: Registry

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        faults = self.server.faults
        header = self.headers.get("Range")
        with faults.lock:
            faults.requests.append((self.path, header))
            failing = faults.fail_first > 0 and self.path.endswith(faults.fail_only)
            faults.fail_first -= failing
            drop = faults.drop_file_after if self.path.endswith(".gguf") else None
            if drop is not None:
                faults.drop_file_after = None
        if failing:
            self.send_error(faults.fail_status)
            return
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        start = int(match.group(1)) if match else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:] if drop is None else data[start : start + drop])
        self.close_connection = drop is not None

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_MAX_S", 0.0)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with serving(Registry(tmp_path / "registry")) as srv:
        yield srv


def desired(rig: Rig, registry: Registry, version: str = "1.0") -> DesiredModel:
    publish_fake_model(registry.root, rig.key, version, size=MODEL_SIZE)
    model = rig.publish(version, size=MODEL_SIZE)
    return model.model_copy(update={"manifest_url": registry.url(f"tiny/{version}/manifest.json")})


def test_manifest_fetch_retries_through_503s(rig: Rig, registry: Registry) -> None:
    registry.faults.fail_first = 3
    assert rig.apply(1, desired(rig, registry)), rig.events[-1].detail
    assert rig.serving() == "tiny:1.0"
    paths = [p for p, _ in registry.faults.requests]
    assert paths[:4] == ["/tiny/1.0/manifest.json"] * 4


def test_download_dropped_mid_file_resumes_with_range(rig: Rig, registry: Registry) -> None:
    registry.faults.drop_file_after = 70_000
    assert rig.apply(1, desired(rig, registry)), rig.events[-1].detail
    file_requests = [r for p, r in registry.faults.requests if p.endswith(".gguf")]
    assert file_requests == [None, "bytes=70000-"]


def test_file_fetch_retries_while_the_server_is_down(rig: Rig, registry: Registry) -> None:
    registry.faults.fail_first, registry.faults.fail_status = 3, 502
    registry.faults.fail_only = ".gguf"  # manifest and signature came; then the restart
    assert rig.apply(1, desired(rig, registry)), rig.events[-1].detail
    assert len([p for p, _ in registry.faults.requests if p.endswith(".gguf")]) == 4


def test_a_missing_manifest_fails_at_once(rig: Rig, registry: Registry) -> None:
    model = rig.publish("1.0").model_copy(update={"manifest_url": registry.url("nope.json")})
    assert not rig.apply(1, model)
    assert "HTTP 404" in rig.events[-1].detail
    assert len(registry.faults.requests) == 1


def test_retries_stop_when_the_window_closes(
    rig: Rig, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_RETRY_WINDOW_S", 0.3)
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_S", 0.05)
    monkeypatch.setattr(agent.fleet.fetch_retry, "FETCH_BACKOFF_MAX_S", 0.05)
    registry.faults.fail_first = 10_000
    assert not rig.apply(1, desired(rig, registry))
    detail = rig.events[-1].detail
    assert rig.events[-1].kind == "failed"
    assert re.search(r"gave up after \d+ attempts in 0.3 s: .*HTTP 503", detail), detail
    assert rig.serving() is None


def test_a_refused_connection_is_retried(tmp_path: Path) -> None:
    """Nothing listens at first (the control plane is restarting); then it comes back."""
    (tmp_path / "doc.json").write_text("{}")
    probe = Registry(tmp_path)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens on the port now: connections are refused
    started: list[Registry] = []

    def sleep(_: float) -> None:
        if not started:
            srv = Registry(tmp_path, port=port)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            started.append(srv)

    url = f"http://127.0.0.1:{port}/doc.json"
    try:
        assert RetryWindow(sleep=sleep).run("fetch", lambda: fetch_bytes(url, {})) == b"{}"
    finally:
        for srv in started:
            srv.shutdown()
            srv.server_close()


def test_permanent_download_errors_are_not_retried() -> None:
    calls: list[int] = []

    def fetch() -> None:
        calls.append(1)
        raise DownloadError("sha256 mismatch", transient=False)

    with pytest.raises(DownloadError):
        RetryWindow().run("download x", fetch)
    assert calls == [1]


def test_gives_up_with_the_last_reason() -> None:
    clock = iter([0.0, 0.0, 5.0, 11.0])
    window = RetryWindow(window_s=10, sleep=lambda _: None, clock=lambda: next(clock))

    def fetch() -> None:
        raise DownloadError("connection reset", transient=True)

    with pytest.raises(RolloutFailed, match="gave up after 3 attempts in 10 s: connection reset"):
        window.run("download x", fetch)


def test_full_disk_is_refused_before_downloading(
    tmp_path: Path, key: Ed25519PrivateKey, registry: Registry
) -> None:
    seen: list[Path] = []

    def disk_usage(path: Path) -> DiskUsage:
        seen.append(path)
        # 260 MiB free on a 1 GiB disk: 256 MiB stay free, 4 MiB are left for a 6 MiB file
        return DiskUsage(total=1 << 30, free=260 << 20)

    rig = Rig(tmp_path, key, disk_usage=disk_usage)
    big = 6 << 20
    publish_fake_model(registry.root, key, "1.0", size=big)
    model = rig.publish("1.0", size=big).model_copy(
        update={"manifest_url": registry.url("tiny/1.0/manifest.json")}
    )
    assert not rig.apply(1, model)
    detail = rig.events[-1].detail
    assert rig.events[-1].kind == "failed"
    store = rig.data / "store"
    assert f"needs 6 MiB on {store}, 260 MiB free, of which 256 MiB stays free" in detail
    assert seen == [store]
    assert "downloading" not in rig.kinds(1)
    assert not [p for p, _ in registry.faults.requests if p.endswith(".gguf")]
    assert not [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert not list((store / "tmp").iterdir())


def test_files_already_stored_need_no_disk(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rig = Rig(tmp_path, key, disk_usage=lambda _: DiskUsage(1 << 30, 0))
    model = rig.publish("1.0")
    ArtifactStore(rig.data / "store").import_file(rig.registry / "tiny" / "1.0" / "model.gguf")
    assert rig.apply(1, model), rig.events[-1].detail
    assert rig.serving() == "tiny:1.0"
