"""Ollama's /api/pull through the real `ollama` client: paths, URLs, the registry, and the
refusals of a model the disk or the memory cannot hold."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="module")
def gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny reference model's f32 GGUF, alone in a folder an HTTP server shares."""
    manifest = Manifest.load(tiny_model_dir)
    entry = next(f for f in manifest.variant("gguf-f32").files if f.path.endswith(".gguf"))
    folder = tmp_path_factory.mktemp("shared")
    target = folder / "tiny.gguf"
    target.write_bytes((tiny_model_dir / entry.path).read_bytes())
    return target


@pytest.fixture(scope="module")
def gguf_sha(gguf: Path) -> str:
    return hashlib.sha256(gguf.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def file_server(gguf: Path) -> Iterator[str]:
    """A plain HTTP server (with HEAD and Content-Length) over the GGUF's folder."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(gguf.parent))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as httpd:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def slow_server(gguf: Path) -> Iterator[str]:
    """An HTTP server that sends the GGUF in 16 KiB pieces, 20 ms apart."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(gguf.stat().st_size))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            data = gguf.read_bytes()
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
def settings(tmp_path: Path) -> PullSettings:
    return PullSettings(data_dir=tmp_path / "agent")


@pytest.fixture
def agent(settings: PullSettings) -> Iterator[tuple[RunningServer, ModelRuntime]]:
    """A real agent server with no model yet, pulling into a private data dir."""
    runtime = ModelRuntime()
    app = create_app(runtime)
    app.state.pull_settings = settings
    with serve_in_thread(app) as running:
        yield running, runtime
    if runtime.known is not None:
        runtime.known.engine.unload()


@pytest.fixture
def client(agent: tuple[RunningServer, ModelRuntime]) -> Any:
    return ollama.Client(host=agent[0].url, timeout=120)


def test_pull_a_path_with_its_sha256_streams_progress_then_serves_it(
    client: Any, gguf: Path, gguf_sha: str
) -> None:
    name = f"{gguf}#sha256={gguf_sha}"
    lines = [p.model_dump(exclude_none=True) for p in client.pull(name, stream=True)]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert statuses.index("verifying sha256 digest") < statuses.index("success")
    downloads = [line for line in lines if line["status"] == "downloading"]
    assert downloads and {d["digest"] for d in downloads} == {f"sha256:{gguf_sha}"}
    assert downloads[-1]["completed"] == downloads[-1]["total"] == gguf.stat().st_size
    assert name in [m.model for m in client.list().models]
    answer = client.generate(model=name, prompt="hello", options={"num_predict": 4})
    assert answer.done and answer.eval_count >= 1


def test_pull_a_url_without_streaming(client: Any, file_server: str, gguf_sha: str) -> None:
    name = f"{file_server}/tiny.gguf#sha256={gguf_sha}"
    assert client.pull(name, stream=False).status == "success"
    assert client.list().models[0].model == name
    assert client.generate(model=name, prompt="hi", options={"num_predict": 2}).done


def test_a_wrong_sha256_is_refused_and_nothing_is_served(
    client: Any, file_server: str, agent: tuple[RunningServer, ModelRuntime]
) -> None:
    name = f"{file_server}/tiny.gguf#sha256={'0' * 64}"
    with pytest.raises(ollama.ResponseError, match="sha256 mismatch") as err:
        client.pull(name, stream=False)
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="sha256 mismatch"):
        list(client.pull(name, stream=True))  # the error arrives as the stream's last line
    assert agent[1].known is None
    assert client.list().models == []


def test_no_sha256_is_refused_unless_the_agent_allows_insecure_pulls(
    client: Any,
    gguf: Path,
    file_server: str,
    settings: PullSettings,
    agent: tuple[RunningServer, ModelRuntime],
) -> None:
    for insecure in (False, True):
        with pytest.raises(ollama.ResponseError, match="carries no sha256") as err:
            client.pull(str(gguf), insecure=insecure, stream=False)
        assert err.value.status_code == 400
    agent[0].server.config.app.state.pull_settings = PullSettings(
        settings.data_dir, allow_insecure=True
    )
    with pytest.raises(ollama.ResponseError, match="carries no sha256"):
        client.pull(str(gguf), stream=False)  # the setting alone is not enough
    assert client.pull(str(gguf), insecure=True, stream=False).status == "success"
    assert client.list().models[0].model == str(gguf)
    url = f"{file_server}/tiny.gguf"
    lines = [p.model_dump(exclude_none=True) for p in client.pull(url, insecure=True, stream=True)]
    assert lines[-1]["status"] == "success"
    assert client.list().models[0].model == url


def test_a_client_that_leaves_stops_the_download(
    agent: tuple[RunningServer, ModelRuntime],
    slow_server: str,
    gguf: Path,
    gguf_sha: str,
    settings: PullSettings,
) -> None:
    import httpx

    body = {"model": f"{slow_server}/tiny.gguf#sha256={gguf_sha}"}
    with httpx.stream("POST", f"{agent[0].url}/api/pull", json=body, timeout=30) as resp:
        for line in resp.iter_lines():
            if '"downloading"' in line and '"completed": 0' not in line:
                break  # some bytes arrived: hang up
    partial = settings.data_dir / "store" / "tmp" / f"{gguf_sha}.partial"
    time.sleep(0.5)
    size = partial.stat().st_size
    time.sleep(0.5)
    assert partial.stat().st_size == size < gguf.stat().st_size  # stopped, kept for a resume
    assert agent[1].known is None


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
    client: Any, name: str, status: int, message: str
) -> None:
    with pytest.raises(ollama.ResponseError, match=message) as err:
        list(client.pull(name, stream=True))
    assert err.value.status_code == status


def test_a_missing_url_is_404(client: Any, file_server: str) -> None:
    with pytest.raises(ollama.ResponseError, match="404") as err:
        client.pull(f"{file_server}/absent.gguf#sha256={'a' * 64}", stream=False)
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
    registry: Any, settings: PullSettings, client: Any, published: Manifest
) -> None:
    from agent.fleet.enroll import enroll

    url, token = registry
    enroll(url, token, settings.data_dir, hardware={"cpu": {"cores": 2}}, agent_version="test")
    name = f"{published.name}:{published.version}"
    lines = [p.model_dump(exclude_none=True) for p in client.pull(name, stream=True)]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    digests = {line["digest"] for line in lines if line["status"] == "downloading"}
    # only the variant this device runs (llama.cpp's) is downloaded
    assert digests == {f"sha256:{f.sha256}" for f in published.variant("gguf-f32").files}
    assert (settings.data_dir / "models").is_dir()
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


def use(agent: tuple[RunningServer, ModelRuntime], settings: PullSettings) -> None:
    agent[0].server.config.app.state.pull_settings = settings


def stored_files(data_dir: Path) -> list[Path]:
    store = data_dir / "store"
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


@pytest.mark.parametrize("where", ["path", "url"])
def test_a_file_the_disk_cannot_hold_is_refused_with_507(
    where: str,
    agent: tuple[RunningServer, ModelRuntime],
    client: Any,
    settings: PullSettings,
    gguf: Path,
    gguf_sha: str,
    file_server: str,
) -> None:
    size = gguf.stat().st_size
    seen: list[Path] = []
    free = DISK_MARGIN_MIN_BYTES + size - 1  # one byte short once the margin stays free
    use(agent, PullSettings(settings.data_dir, profile=small_device(), disk_usage=disk(free, seen)))
    location = str(gguf) if where == "path" else f"{file_server}/tiny.gguf"
    store = settings.data_dir / "store"
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as err:
            list(client.pull(f"{location}#sha256={gguf_sha}", stream=stream))
        assert err.value.status_code == 507
        assert f"model {location} needs 654 KiB on {store}, 257 MiB free, of which 256 MiB" in (
            err.value.error
        )
    assert seen and set(seen) == {store}
    assert not settings.data_dir.exists()  # nothing written: no store, no partial file
    assert agent[1].known is None


def test_a_file_the_memory_cannot_hold_is_refused_with_400(
    agent: tuple[RunningServer, ModelRuntime],
    client: Any,
    settings: PullSettings,
    gguf: Path,
    gguf_sha: str,
    file_server: str,
) -> None:
    use(agent, PullSettings(settings.data_dir, profile=small_device(available=100 * MIB)))
    for location in (str(gguf), f"{file_server}/tiny.gguf"):
        with pytest.raises(ollama.ResponseError) as err:
            client.pull(f"{location}#sha256={gguf_sha}", stream=False)
        assert err.value.status_code == 400
        # 654 KiB x 1.15 + 256 MiB: the file's size counted as selection counts memory_bytes
        assert err.value.error.startswith(
            f"model {location} requires more memory (257 MiB) than is available (100 MiB)"
        )
    assert not settings.data_dir.exists()


def test_room_taken_after_the_checks_ends_the_stream_with_an_error_line(
    agent: tuple[RunningServer, ModelRuntime],
    settings: PullSettings,
    gguf: Path,
    gguf_sha: str,
) -> None:
    answers = iter([GIB, 0])  # room when the pull is prepared, none when it starts

    def shrinking(_path: Path) -> DiskUsage:
        return DiskUsage(total=GIB, free=next(answers, 0))

    use(agent, PullSettings(settings.data_dir, profile=small_device(), disk_usage=shrinking))
    body = {"model": f"{gguf}#sha256={gguf_sha}"}
    import httpx

    resp = httpx.post(f"{agent[0].url}/api/pull", json=body, timeout=60)
    assert resp.status_code == 200  # progress had begun, as Ollama streams its errors
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert "needs 654 KiB" in lines[-1]["error"] and len(lines) == 2
    assert stored_files(settings.data_dir) == []
    assert agent[1].known is None


def test_a_file_already_stored_needs_no_disk(
    agent: tuple[RunningServer, ModelRuntime],
    client: Any,
    settings: PullSettings,
    gguf: Path,
    gguf_sha: str,
) -> None:
    name = f"{gguf}#sha256={gguf_sha}"
    use(agent, PullSettings(settings.data_dir, profile=small_device()))
    assert client.pull(name, stream=False).status == "success"
    use(agent, PullSettings(settings.data_dir, profile=small_device(), disk_usage=disk(0)))
    assert client.pull(name, stream=False).status == "success"


def test_the_registry_refuses_before_recording_or_fetching(
    registry: Any,
    agent: tuple[RunningServer, ModelRuntime],
    client: Any,
    settings: PullSettings,
    published: Manifest,
) -> None:
    from agent.fleet.enroll import enroll

    url, token = registry
    enroll(url, token, settings.data_dir, hardware={"cpu": {"cores": 2}}, agent_version="test")
    name = f"{published.name}:{published.version}"
    store = settings.data_dir / "store"
    files = published.variant("gguf-f32").files
    size = sum(f.size for f in files)
    use(agent, PullSettings(settings.data_dir, profile=small_device(), disk_usage=disk(size)))
    with pytest.raises(ollama.ResponseError) as err:
        list(client.pull(name, stream=True))
    assert err.value.status_code == 507
    assert f"model {name} (gguf-f32) needs 675 KiB on {store}" in err.value.error
    use(agent, PullSettings(settings.data_dir, profile=small_device(available=100 * MIB)))
    with pytest.raises(ollama.ResponseError) as err:
        client.pull(name, stream=False)
    assert err.value.status_code == 400
    assert "fits this device" in err.value.error
    assert "gguf-f32/llamacpp: needs 0.3 GiB, 0.1 GiB available" in err.value.error
    assert stored_files(settings.data_dir) == []  # no manifest, no ref, no blob
    assert agent[1].known is None
