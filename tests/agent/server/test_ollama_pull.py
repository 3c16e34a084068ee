"""Ollama's /api/pull through the real `ollama` client: paths, URLs, the registry, and the
refusals of a model the disk or the memory cannot hold."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from agent.capacity import DISK_MARGIN_MIN_BYTES, DiskUsage
from agent.model_pull import PullSettings
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer, serve_in_thread
from hwprobe.profile import HardwareProfile, MemoryInfo
from models.manifest import Manifest
from tests.support.http import serving

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")
MIB, GIB = 1 << 20, 1 << 30


@dataclass(frozen=True)
class SharedGGUF:
    """The tiny reference model's f32 GGUF, its digest, and its address on a plain HTTP server."""

    path: Path
    sha256: str
    url: str

    def pinned(self, location: str) -> str:
        """`location` with the file's digest, as a pull names it."""
        return f"{location}#sha256={self.sha256}"


@dataclass
class PullAgent:
    """A real agent server with no model yet, pulling into a private data dir."""

    server: RunningServer
    app: FastAPI
    runtime: ModelRuntime
    settings: PullSettings
    client: Any  # ollama.Client

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def use(self, settings: PullSettings) -> None:
        """Pull with `settings` from now on."""
        self.app.state.pull_settings = settings


@pytest.fixture(scope="module")
def gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedGGUF]:
    """The GGUF alone in a folder that a plain HTTP server (with HEAD, Content-Length) shares."""
    manifest = Manifest.load(tiny_model_dir)
    entry = next(f for f in manifest.variant("gguf-f32").files if f.path.endswith(".gguf"))
    target = tmp_path_factory.mktemp("shared") / "tiny.gguf"
    target.write_bytes((tiny_model_dir / entry.path).read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(target.parent))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as httpd:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny.gguf"
        yield SharedGGUF(target, hashlib.sha256(target.read_bytes()).hexdigest(), url)


@pytest.fixture
def slow_server(gguf: SharedGGUF) -> Iterator[str]:
    """An HTTP server that sends the GGUF in 16 KiB pieces, 20 ms apart."""
    data = gguf.path.read_bytes()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            try:
                for start in range(0, len(data), 16 << 10):
                    self.wfile.write(data[start : start + (16 << 10)])
                    time.sleep(0.02)
            except OSError:  # the agent stopped reading
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)) as httpd:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[PullAgent]:
    runtime = ModelRuntime()
    app = create_app(runtime)
    settings = PullSettings(data_dir=tmp_path / "agent")
    app.state.pull_settings = settings
    with serve_in_thread(app) as running:
        yield PullAgent(
            running, app, runtime, settings, ollama.Client(host=running.url, timeout=120)
        )
    if runtime.known is not None:
        runtime.known.engine.unload()


def test_pull_a_path_with_its_sha256_streams_progress_then_serves_it(
    agent: PullAgent, gguf: SharedGGUF
) -> None:
    client, name = agent.client, gguf.pinned(str(gguf.path))
    lines = [p.model_dump(exclude_none=True) for p in client.pull(name, stream=True)]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert statuses.index("verifying sha256 digest") < statuses.index("success")
    downloads = [line for line in lines if line["status"] == "downloading"]
    assert downloads and {d["digest"] for d in downloads} == {f"sha256:{gguf.sha256}"}
    assert downloads[-1]["completed"] == downloads[-1]["total"] == gguf.path.stat().st_size
    assert name in [m.model for m in client.list().models]
    answer = client.generate(model=name, prompt="hello", options={"num_predict": 4})
    assert answer.done and answer.eval_count >= 1


def test_pull_a_url_without_streaming(agent: PullAgent, gguf: SharedGGUF) -> None:
    client, name = agent.client, gguf.pinned(gguf.url)
    assert client.pull(name, stream=False).status == "success"
    assert client.list().models[0].model == name
    assert client.generate(model=name, prompt="hi", options={"num_predict": 2}).done


def test_a_wrong_sha256_is_refused_and_nothing_is_served(
    agent: PullAgent, gguf: SharedGGUF
) -> None:
    name = f"{gguf.url}#sha256={'0' * 64}"
    with pytest.raises(ollama.ResponseError, match="sha256 mismatch") as err:
        agent.client.pull(name, stream=False)
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="sha256 mismatch"):
        list(agent.client.pull(name, stream=True))  # the error arrives as the stream's last line
    assert agent.runtime.known is None
    assert agent.client.list().models == []


def test_no_sha256_is_refused_unless_the_agent_allows_insecure_pulls(
    agent: PullAgent, gguf: SharedGGUF
) -> None:
    client, path = agent.client, str(gguf.path)
    for insecure in (False, True):
        with pytest.raises(ollama.ResponseError, match="carries no sha256") as err:
            client.pull(path, insecure=insecure, stream=False)
        assert err.value.status_code == 400
    agent.use(PullSettings(agent.data_dir, allow_insecure=True))
    with pytest.raises(ollama.ResponseError, match="carries no sha256"):
        client.pull(path, stream=False)  # the setting alone is not enough
    assert client.pull(path, insecure=True, stream=False).status == "success"
    assert client.list().models[0].model == path
    lines = [
        p.model_dump(exclude_none=True) for p in client.pull(gguf.url, insecure=True, stream=True)
    ]
    assert lines[-1]["status"] == "success"
    assert client.list().models[0].model == gguf.url


def test_a_client_that_leaves_stops_the_download(
    agent: PullAgent, gguf: SharedGGUF, slow_server: str
) -> None:
    import httpx

    body = {"model": gguf.pinned(f"{slow_server}/tiny.gguf")}
    with httpx.stream("POST", f"{agent.server.url}/api/pull", json=body, timeout=30) as resp:
        for line in resp.iter_lines():
            if '"downloading"' in line and '"completed": 0' not in line:
                break  # some bytes arrived: hang up
    partial = agent.data_dir / "store" / "tmp" / f"{gguf.sha256}.partial"
    time.sleep(0.5)
    size = partial.stat().st_size
    time.sleep(0.5)
    assert partial.stat().st_size == size < gguf.path.stat().st_size  # stopped, kept for a resume
    assert agent.runtime.known is None


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("tiny:1.0", 400, "not enrolled"),
        ("/nowhere/model.gguf#sha256=" + "a" * 64, 404, "is not a file"),
        ("/etc/hostname", 400, "not a .gguf"),
        ("ftp://host/x.gguf#sha256=" + "a" * 64, 400, "only http, https"),
    ],
)
def test_bad_names_answer_4xx_in_ollamas_shape(
    agent: PullAgent, name: str, status: int, message: str
) -> None:
    with pytest.raises(ollama.ResponseError, match=message) as err:
        list(agent.client.pull(name, stream=True))
    assert err.value.status_code == status


def test_a_missing_url_is_404(agent: PullAgent, gguf: SharedGGUF) -> None:
    absent = gguf.url.replace("tiny.gguf", "absent.gguf")
    with pytest.raises(ollama.ResponseError, match="404") as err:
        agent.client.pull(f"{absent}#sha256={'a' * 64}", stream=False)
    assert err.value.status_code == 404


# -- the control plane's registry ------------------------------------------------------------


KEPT_VARIANTS = (
    "gguf-f32",
    "onnx-fp32",
)  # llama.cpp runs the first here, the second is not fetched


@pytest.fixture
def published(tmp_path: Path, tiny_model_dir: Path) -> Manifest:
    """The tiny model with two of its variants, signed by a fresh key (the registry re-signs)."""
    import shutil

    from models.keys import generate_key
    from models.signing import write_signed_manifest

    out = tmp_path / "published"
    shutil.copytree(tiny_model_dir, out)
    full = Manifest.load(out)
    kept = [v for v in full.variants if v.id in KEPT_VARIANTS]
    manifest = full.model_copy(update={"variants": kept})
    write_signed_manifest(out, manifest, generate_key())
    return manifest


@pytest.fixture
def registry(tmp_path: Path, published: Manifest) -> Iterator[tuple[str, str]]:
    """A real control plane (uvicorn, SQLite, no broker) holding the model; URL and a token."""
    import httpx

    from controlplane.core.config import Settings
    from tests.e2e.harness import admin_token, run_control_plane
    from tests.support.mosquitto import free_port

    port = free_port()
    cp = Settings(
        data_dir=tmp_path / "cp",
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_cp_password="cp-secret",
    )
    token = admin_token(cp)
    with run_control_plane(cp) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            resp = http.post(
                "/api/v1/models/import", json={"path": str(tmp_path / "published"), "resign": True}
            )
            assert resp.status_code == 201, resp.text
            resp = http.post("/api/v1/enrollment-tokens", json={"labels": {}})
            assert resp.status_code == 201, resp.text
            yield url, resp.json()["token"]


def test_pull_from_the_registry_when_enrolled(
    registry: Any, agent: PullAgent, published: Manifest
) -> None:
    from agent.fleet.enroll import enroll

    url, token = registry
    client = agent.client
    enroll(url, token, agent.data_dir, hardware={"cpu": {"cores": 2}}, agent_version="test")
    name = f"{published.name}:{published.version}"
    lines = [p.model_dump(exclude_none=True) for p in client.pull(name, stream=True)]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    digests = {line["digest"] for line in lines if line["status"] == "downloading"}
    # only the variant this device runs (llama.cpp's) is downloaded
    assert digests == {f"sha256:{f.sha256}" for f in published.variant("gguf-f32").files}
    assert (agent.data_dir / "models").is_dir()
    assert name in [m.model for m in client.list().models]
    assert client.generate(model=name, prompt="hello", options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError, match="not in the control plane") as err:
        client.pull(f"{published.name}:9.9", stream=False)
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError, match="name the version"):
        client.pull(published.name, stream=False)


# -- refused before anything is written: the disk and the memory ------------------------------


def small_device(available: int = 8 * GIB) -> HardwareProfile:
    """A CPU device running llama.cpp with `available` bytes of memory free."""
    return HardwareProfile(
        device_class="cpu-x86",
        engines=["llamacpp"],
        memory=MemoryInfo(total_bytes=16 * GIB, available_bytes=available),
    )


def disk(free: int, seen: list[Path] | None = None) -> Callable[[Path], DiskUsage]:
    """A 1 GiB filesystem with `free` bytes free (its margin is the 256 MiB floor)."""

    def usage(path: Path) -> DiskUsage:
        if seen is not None:
            seen.append(path)
        return DiskUsage(total=GIB, free=free)

    return usage


def stored_files(data_dir: Path) -> list[Path]:
    store = data_dir / "store"
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


@pytest.mark.parametrize("where", ["path", "url"])
def test_a_file_the_disk_cannot_hold_is_refused_with_507(
    where: str, agent: PullAgent, gguf: SharedGGUF
) -> None:
    size = gguf.path.stat().st_size
    seen: list[Path] = []
    free = DISK_MARGIN_MIN_BYTES + size - 1  # one byte short once the margin stays free
    agent.use(PullSettings(agent.data_dir, profile=small_device(), disk_usage=disk(free, seen)))
    location = str(gguf.path) if where == "path" else gguf.url
    store = agent.data_dir / "store"
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as err:
            list(agent.client.pull(gguf.pinned(location), stream=stream))
        assert err.value.status_code == 507
        assert f"model {location} needs 654 KiB on {store}, 257 MiB free, of which 256 MiB" in (
            err.value.error
        )
    assert seen and set(seen) == {store}
    assert not agent.data_dir.exists()  # nothing written: no store, no partial file
    assert agent.runtime.known is None


def test_a_file_the_memory_cannot_hold_is_refused_with_400(
    agent: PullAgent, gguf: SharedGGUF
) -> None:
    agent.use(PullSettings(agent.data_dir, profile=small_device(available=100 * MIB)))
    for location in (str(gguf.path), gguf.url):
        with pytest.raises(ollama.ResponseError) as err:
            agent.client.pull(gguf.pinned(location), stream=False)
        assert err.value.status_code == 400
        # 654 KiB x 1.15 + 256 MiB: the file's size counted as selection counts memory_bytes
        assert err.value.error.startswith(
            f"model {location} requires more memory (257 MiB) than is available (100 MiB)"
        )
    assert not agent.data_dir.exists()


def test_room_taken_after_the_checks_ends_the_stream_with_an_error_line(
    agent: PullAgent, gguf: SharedGGUF
) -> None:
    answers = iter([GIB, 0])  # room when the pull is prepared, none when it starts

    def shrinking(_path: Path) -> DiskUsage:
        return DiskUsage(total=GIB, free=next(answers, 0))

    agent.use(PullSettings(agent.data_dir, profile=small_device(), disk_usage=shrinking))
    import httpx

    body = {"model": gguf.pinned(str(gguf.path))}
    resp = httpx.post(f"{agent.server.url}/api/pull", json=body, timeout=60)
    assert resp.status_code == 200  # progress had begun, as Ollama streams its errors
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert "needs 654 KiB" in lines[-1]["error"] and len(lines) == 2
    assert stored_files(agent.data_dir) == []
    assert agent.runtime.known is None


def test_a_file_already_stored_needs_no_disk(agent: PullAgent, gguf: SharedGGUF) -> None:
    name = gguf.pinned(str(gguf.path))
    agent.use(PullSettings(agent.data_dir, profile=small_device()))
    assert agent.client.pull(name, stream=False).status == "success"
    agent.use(PullSettings(agent.data_dir, profile=small_device(), disk_usage=disk(0)))
    assert agent.client.pull(name, stream=False).status == "success"


def test_the_registry_refuses_before_recording_or_fetching(
    registry: Any, agent: PullAgent, published: Manifest
) -> None:
    from agent.fleet.enroll import enroll

    url, token = registry
    enroll(url, token, agent.data_dir, hardware={"cpu": {"cores": 2}}, agent_version="test")
    name = f"{published.name}:{published.version}"
    store = agent.data_dir / "store"
    files = published.variant("gguf-f32").files
    size = sum(f.size for f in files)
    agent.use(PullSettings(agent.data_dir, profile=small_device(), disk_usage=disk(size)))
    with pytest.raises(ollama.ResponseError) as err:
        list(agent.client.pull(name, stream=True))
    assert err.value.status_code == 507
    assert f"model {name} (gguf-f32) needs 675 KiB on {store}" in err.value.error
    agent.use(PullSettings(agent.data_dir, profile=small_device(available=100 * MIB)))
    with pytest.raises(ollama.ResponseError) as err:
        agent.client.pull(name, stream=False)
    assert err.value.status_code == 400
    assert "fits this device" in err.value.error
    assert "gguf-f32/llamacpp: needs 0.3 GiB, 0.1 GiB available" in err.value.error
    assert stored_files(agent.data_dir) == []  # no manifest, no ref, no blob
    assert agent.runtime.known is None
