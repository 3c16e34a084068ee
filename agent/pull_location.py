"""Pulling a `.gguf` by path or URL (agent/model_pull.py's second kind).

The name must carry the file's sha256 (`#sha256=<hex>`) unless insecure pulls are allowed. The
size comes from the file or a `HEAD` (Content-Length) before anything is fetched, so the memory
the model needs (the file's size counted as selection counts `memory_bytes`) and the disk the
download needs are checked first.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from agent.model_pull import HTTP_TIMEOUT_S, Emit, ModelPull, PullError, PullPlan, sha_fragment
from agent.selection import memory_need_bytes
from models.errors import ModelsError

if TYPE_CHECKING:
    from hwprobe.profile import HardwareProfile

_LOGGER = logging.getLogger(__name__)
_ENGINE = "llamacpp"  # the engine that runs a bare .gguf (agent/model_loading.py)


def plan_location_pull(job: ModelPull) -> PullPlan:
    """Check the location, its sha256, size and fit; the plan that fetches it."""
    location, sha = sha_fragment(job.name)
    parsed = urlparse(location)
    remote = parsed.scheme in ("http", "https")
    if parsed.scheme == "file":
        location = parsed.path
    elif parsed.scheme and not remote:
        raise PullError(f"cannot pull {location!r}: only http, https, file URLs and paths work")
    filename = Path(parsed.path if remote else location).name
    if not filename.endswith(".gguf"):
        raise PullError(f"{location} is not a .gguf file; pull a GGUF, or a NAME:VERSION")
    if sha is None and not (job.insecure and job.settings.allow_insecure):
        raise PullError(
            f"{location} carries no sha256, so the file cannot be verified: append "
            "#sha256=<hex of the file> to the name. Unverified pulls need "
            "allow_insecure_pull = true in the agent's settings and insecure: true in the "
            "request"
        )
    if not remote:
        location = str(Path(location).expanduser())
    size = _remote_size(location) if remote else _local_size(Path(location))
    need = memory_need_bytes(size, _ENGINE)
    job.check_memory(f"model {location}", need, gguf_memory_available(job.profile()))

    def to_fetch() -> int:
        if sha is not None:
            return job.missing_bytes([(sha, size)])
        return 2 * size if remote else size  # an unverified download is then copied in

    def download(emit: Emit) -> Path:
        known = sha or _unverified_sha(job, location, remote, size, emit)
        blob = job.fetch(location, known, size, emit, {})
        emit({"status": "verifying sha256 digest"})
        dest = job.settings.data_dir / "models" / "pulled" / known[:16] / filename
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blob, dest)
        return dest

    return PullPlan(what=f"model {location}", to_fetch=to_fetch, download=download)


def gguf_memory_available(profile: HardwareProfile) -> int | None:
    """Memory a bare .gguf can fill: system memory, or a larger GPU llama.cpp offloads to."""
    from agent.selection import engine_device, gpu_memory_budget

    system = profile.memory.available_bytes
    budget = gpu_memory_budget(_ENGINE, engine_device(_ENGINE, profile), profile)
    if budget is None or budget <= 0:
        return system
    return budget if system is None else max(system, budget)


def _unverified_sha(job: ModelPull, location: str, remote: bool, size: int, emit: Emit) -> str:
    """The sha256 of a file pulled without one (insecure): hashed, or downloaded first."""
    _LOGGER.warning("pulling %s without a sha256 to check (insecure pull allowed)", location)
    if not remote:
        from models.files import hash_file

        return hash_file(Path(location))[0]
    from models.download import download

    partial = job.store.tmp / f"insecure-{threading.get_ident()}-{time.time_ns()}.partial"
    try:
        sha = download(location, partial, size, {}, job.progress(emit, "unverified", size))
        job.store.import_file(partial, sha)
    except ModelsError as exc:
        raise PullError(f"cannot download {location}: {exc.reason}", 500) from exc
    finally:
        partial.unlink(missing_ok=True)
    return sha


def _remote_size(url: str) -> int:
    """The file's size from a HEAD request (the download checks it)."""
    import httpx

    try:
        resp = httpx.head(url, timeout=HTTP_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise PullError(f"cannot reach {url}: {exc}", 500) from exc
    if resp.status_code == 404:
        raise PullError(f"{url}: not found (HTTP 404)", 404)
    if resp.status_code != 200:
        raise PullError(f"{url}: HTTP {resp.status_code}", 500)
    length = resp.headers.get("content-length", "")
    if not length.isdigit():
        raise PullError(f"{url}: the server does not say the file's size (Content-Length)", 500)
    return int(length)


def _local_size(path: Path) -> int:
    if not path.is_file():
        raise PullError(f"{path} is not a file on this device", 404)
    return path.stat().st_size


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        dest.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dest)
