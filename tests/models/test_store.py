"""The artifact store against a real HTTP server: resume, tampering, concurrency, gc, disk full."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import models.files
import models.store
from models.errors import DownloadError, StoreError, VerificationError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from models.signing import verify_model_dir, write_signed_manifest
from models.store import ArtifactStore
from tests.support.http import serving

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
REPO_ROOT = Path(__file__).resolve().parents[2]


class BlobServer(ThreadingHTTPServer):
    """Serves `files` with Range support; can drop a response, ignore Range, or go slowly."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {"/blob": PAYLOAD}
        self.ranges: list[str | None] = []
        self.bytes_sent = 0
        self.drop_after: int | None = None  # one-shot: close after this many body bytes
        self.ignore_range = False
        self.chunk_delay_s = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/blob"


class _Handler(BaseHTTPRequestHandler):
    server: BlobServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        with srv.lock:
            srv.ranges.append(header)
            drop_after, srv.drop_after = srv.drop_after, None
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        start = int(match.group(1)) if match and not srv.ignore_range else 0
        if start >= len(data) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:] if drop_after is None else data[start : start + drop_after]
        for i in range(0, len(body), 16384):
            self.wfile.write(body[i : i + 16384])
            with srv.lock:
                srv.bytes_sent += len(body[i : i + 16384])
            if srv.chunk_delay_s:
                time.sleep(srv.chunk_delay_s)
        self.close_connection = drop_after is not None

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[BlobServer]:
    with serving(BlobServer()) as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_fetch_installs_a_verified_read_only_blob(server: BlobServer, store: ArtifactStore) -> None:
    seen: list[tuple[int, int]] = []
    path = store.fetch(
        server.url, PAYLOAD_SHA, len(PAYLOAD), progress=lambda d, t: seen.append((d, t))
    )
    assert path == store.path(PAYLOAD_SHA) and path.read_bytes() == PAYLOAD
    assert path.parent.name == PAYLOAD_SHA[:2]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert path.stat().st_mode & 0o222 == 0
    assert list(store.tmp.iterdir()) == []
    # present now: no second request
    assert store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD)) == path
    assert server.ranges == [None]


def test_killed_download_resumes_from_where_it_stopped(
    server: BlobServer, store: ArtifactStore
) -> None:
    server.drop_after = 70_000
    with pytest.raises(
        DownloadError, match="stopped at 70000 of 300000 bytes.*run again to resume"
    ):
        store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD))
    assert not store.has(PAYLOAD_SHA)
    assert (store.tmp / f"{PAYLOAD_SHA}.partial").stat().st_size == 70_000
    sent_before = server.bytes_sent
    assert store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=70000-"]
    assert server.bytes_sent - sent_before == len(PAYLOAD) - 70_000


def test_server_that_ignores_range_restarts_the_download(
    server: BlobServer, store: ArtifactStore
) -> None:
    server.drop_after = 50_000
    with pytest.raises(DownloadError):
        store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD))
    server.ignore_range = True
    assert store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=50000-"]


def test_tampered_download_is_refused_and_deleted(server: BlobServer, store: ArtifactStore) -> None:
    tampered = bytearray(PAYLOAD)
    tampered[12345] ^= 0xFF
    server.files["/blob"] = bytes(tampered)
    with pytest.raises(DownloadError, match=f"sha256 mismatch \\(expected {PAYLOAD_SHA}, got "):
        store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD))
    assert not store.has(PAYLOAD_SHA)
    assert list(store.tmp.iterdir()) == []


def test_corrupt_partial_is_caught_then_a_clean_retry_succeeds(
    server: BlobServer, store: ArtifactStore
) -> None:
    (store.tmp / f"{PAYLOAD_SHA}.partial").write_bytes(b"\0" * 1000)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD))
    assert store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-", None]


def test_oversized_and_missing_downloads_are_refused(
    server: BlobServer, store: ArtifactStore
) -> None:
    with pytest.raises(DownloadError, match="server sent more than 1000 bytes"):
        store.fetch(server.url, PAYLOAD_SHA, 1000)
    with pytest.raises(DownloadError, match=r"HTTP 404; check the URL"):
        store.fetch(server.url + "-nope", PAYLOAD_SHA, len(PAYLOAD))
    assert not store.has(PAYLOAD_SHA)


def test_file_urls_and_plain_paths_import_air_gapped(tmp_path: Path, store: ArtifactStore) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(PAYLOAD)
    assert store.fetch(src.as_uri(), PAYLOAD_SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    other = ArtifactStore(tmp_path / "other")
    assert other.fetch(str(src), PAYLOAD_SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="size 300000 != 5"):
        ArtifactStore(tmp_path / "third").fetch(str(src), PAYLOAD_SHA, 5)
    with pytest.raises(DownloadError, match="no such file"):
        store.fetch(str(tmp_path / "absent"), "0" * 64, 1)


_CHILD = """
import sys
from pathlib import Path
from models.store import ArtifactStore
path = ArtifactStore(Path(sys.argv[1])).fetch(sys.argv[2], sys.argv[3], int(sys.argv[4]))
print(path)
"""


def test_two_processes_fetching_one_blob_download_it_once(
    server: BlobServer, store: ArtifactStore
) -> None:
    server.chunk_delay_s = 0.005  # keep the first download open while the second starts
    args = [str(store.root), server.url, PAYLOAD_SHA, str(len(PAYLOAD))]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [c.communicate(timeout=60)[0].strip() for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert outputs == [str(store.path(PAYLOAD_SHA))] * 2
    assert store.path(PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert server.ranges == [None]  # the second waited on the lock, then found the blob


def test_import_and_materialize_one_variant(
    model_dir: Path, signing_key: Ed25519PrivateKey, store: ArtifactStore, tmp_path: Path
) -> None:
    trusted = [signing_key.public_key()]
    manifest = store.import_model_dir(model_dir, trusted)
    assert [(r.name, r.version) for r in store.list_models()] == [("tiny-test", "1.0")]
    dest = store.materialize(manifest, "gguf-q4_0", tmp_path / "slots" / "a")
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == sorted(
        [MANIFEST_FILE, SIGNATURE_FILE, "gguf-q4_0/model.gguf", "tokenizer.json"]
    )
    assert verify_model_dir(dest, trusted, ["gguf-q4_0"]).ref == "tiny-test:1.0"
    gguf = manifest.variant("gguf-q4_0").files[0]
    assert (dest / gguf.path).stat().st_ino == store.path(gguf.sha256).stat().st_ino
    # materializing again replaces the directory whole, leaving nothing behind
    store.materialize(manifest, "onnx-fp16", dest)
    assert not (dest / "gguf-q4_0").exists() and (dest / "onnx-fp16" / "model.onnx").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a"]


def test_materialize_with_a_missing_blob_leaves_no_directory(
    model_dir: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    manifest = store.import_model_dir(model_dir)
    onnx = manifest.variant("onnx-fp16").files[0]
    store.path(onnx.sha256).unlink()
    with pytest.raises(StoreError, match="onnx-fp16/model.onnx of tiny-test:1.0 is not in the"):
        store.materialize(manifest, "onnx-fp16", tmp_path / "slots" / "b")
    assert list((tmp_path / "slots").iterdir()) == []


def _killed_materialize(
    store: ArtifactStore, manifest: Manifest, dest: Path, renames_before_death: int
) -> None:
    """Run materialize in a forked child that dies, like a kill -9, at a chosen rename."""
    pid = os.fork()
    if pid == 0:
        try:
            real_rename, left = os.rename, [renames_before_death]

            def rename(src: str | Path, dst: str | Path) -> None:
                if left[0] == 0:
                    os._exit(9)
                left[0] -= 1
                real_rename(src, dst)

            os.rename = rename  # type: ignore[assignment]
            store.materialize(manifest, "gguf-q4_0", dest)
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 9


def _age(tree: Path, seconds: float) -> None:
    when = time.time() - seconds
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (when, when), follow_symlinks=False)


def test_materialize_clears_what_a_killed_materialize_left_next_to_it(
    model_dir: Path, signing_key: Ed25519PrivateKey, store: ArtifactStore, tmp_path: Path
) -> None:
    manifest = store.import_model_dir(model_dir)
    slots = tmp_path / "slots"
    store.materialize(manifest, "gguf-q4_0", slots / "a")
    # killed after setting the old directory aside: staging and the old copy stay, "a" is gone
    _killed_materialize(store, manifest, slots / "a", renames_before_death=1)
    leftovers = sorted(p for p in slots.iterdir())
    assert len(leftovers) == 2 and not (slots / "a").exists()
    _killed_materialize(store, manifest, slots / "b", renames_before_death=0)
    (b_staging,) = (p for p in slots.iterdir() if p.name.startswith(".b."))
    for leftover in [*leftovers, b_staging]:
        _age(leftover, models.store.STAGING_MAX_AGE_S + 60)
    _killed_materialize(store, manifest, slots / "a", renames_before_death=0)  # a recent one
    (recent,) = (p for p in slots.iterdir() if p.name.startswith(".a.") and p not in leftovers)
    # a long copy in progress: the directory is old, the file being written is not
    (recent / "gguf-q4_0").mkdir(exist_ok=True)
    _age(recent, models.store.STAGING_MAX_AGE_S + 60)
    (recent / "gguf-q4_0" / "model.gguf").unlink(missing_ok=True)
    (recent / "gguf-q4_0" / "model.gguf").write_bytes(b"still copying")

    dest = store.materialize(manifest, "gguf-q4_0", slots / "a")
    assert sorted(p.name for p in slots.iterdir()) == sorted(["a", recent.name, b_staging.name])
    assert verify_model_dir(dest, [signing_key.public_key()], ["gguf-q4_0"]).ref == manifest.ref


def test_agent_flow_manifest_first_then_files(
    model_dir: Path, signing_key: Ed25519PrivateKey, store: ArtifactStore, tmp_path: Path
) -> None:
    manifest = store.add_manifest(
        (model_dir / MANIFEST_FILE).read_bytes(),
        (model_dir / SIGNATURE_FILE).read_bytes(),
        [signing_key.public_key()],
    )
    assert store.gc() == 0  # the ref already protects the files still to come
    for entry in manifest.variant("gguf-q4_0").files:
        store.fetch((model_dir / entry.path).as_uri(), entry.sha256, entry.size)
    dest = store.materialize(store.manifest("tiny-test", "1.0"), "gguf-q4_0", tmp_path / "m")
    assert verify_model_dir(dest, [signing_key.public_key()], ["gguf-q4_0"]).name == "tiny-test"


def test_import_refuses_a_tampered_model_and_records_nothing(
    model_dir: Path, signing_key: Ed25519PrivateKey, store: ArtifactStore
) -> None:
    target = model_dir / "gguf-q4_0" / "model.gguf"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="file gguf-q4_0/model.gguf: sha256 mismatch"):
        store.import_model_dir(model_dir, [signing_key.public_key()])
    assert store.list_models() == []
    assert not store.has(hashlib.sha256(bytes(data)).hexdigest())


def test_gc_frees_unreferenced_blobs_and_stale_partials(
    model_dir: Path, store: ArtifactStore
) -> None:
    manifest = store.import_model_dir(model_dir)
    orphan = store.import_bytes(b"x" * 777)
    stale, fresh = store.tmp / f"{'a' * 64}.partial", store.tmp / f"{'b' * 64}.partial"
    stale.write_bytes(b"s" * 100)
    fresh.write_bytes(b"f" * 10)
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    assert store.gc() == 777 + 100
    assert not store.has(orphan) and not stale.exists() and fresh.exists()
    shas = {f.sha256 for v in manifest.variants for f in v.files}
    assert all(store.has(s) for s in shas)
    assert store.gc(keep=set()) == 0
    store.remove("tiny-test", "1.0")
    assert store.gc() == sum(
        f.size for f in {f.path: f for v in manifest.variants for f in v.files}.values()
    ) + ((model_dir / MANIFEST_FILE).stat().st_size + (model_dir / SIGNATURE_FILE).stat().st_size)
    assert list(store.blobs.glob("*/*")) == []
    with pytest.raises(StoreError, match="is not in the store"):
        store.remove("tiny-test", "1.0")


def _disk_fills_after(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    written = [0]

    def write(f: BinaryIO, data: bytes) -> None:
        if written[0] + len(data) > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        f.write(data)

    monkeypatch.setattr(models.files, "write_chunk", write)


def test_disk_full_during_download_leaves_no_blob(
    server: BlobServer, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_fills_after(100_000, monkeypatch)
    with pytest.raises(DownloadError, match="disk full"):
        store.fetch(server.url, PAYLOAD_SHA, len(PAYLOAD))
    assert not store.has(PAYLOAD_SHA)
    assert list(store.tmp.iterdir()) == []


def test_disk_full_during_import_leaves_no_blob_and_no_ref(
    model_dir: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_fills_after(150_000, monkeypatch)  # inside the 200 kB gguf file
    with pytest.raises(StoreError, match="disk full writing .* free space, retry"):
        store.import_model_dir(model_dir)
    manifest = Manifest.load(model_dir)
    assert store.list_models() == []
    assert not store.has(manifest.variant("gguf-q4_0").files[0].sha256)
    assert list(store.tmp.iterdir()) == []


def test_bad_sha_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="not a lowercase hex sha256"):
        store.path("../../etc/passwd")


def test_a_version_is_immutable(
    model_dir: Path, signing_key: Ed25519PrivateKey, store: ArtifactStore
) -> None:
    manifest = store.import_model_dir(model_dir)
    assert store.import_model_dir(model_dir).ref == manifest.ref  # same content: fine
    changed = manifest.model_copy(update={"context_length": 512})
    write_signed_manifest(model_dir, changed, signing_key)
    with pytest.raises(StoreError, match="tiny-test:1.0 is already in the store with a different"):
        store.import_model_dir(model_dir)
    store.remove("tiny-test", "1.0")
    assert store.import_model_dir(model_dir).context_length == 512
