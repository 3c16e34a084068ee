"""Pulling a model onto this device by name: the control plane's registry, a path or a URL.

Verification follows the rollout path (agent/fleet/staging.py):

- `NAME:VERSION` comes from the control plane's registry when the agent is enrolled: the
  manifest's signature is checked against the keys enrollment gave, then this device's variant
  is downloaded with the artifact token, each file checked against the manifest's sha256 as it
  arrives (models.store), and laid out under `data_dir/models/` as `run NAME:VERSION` does.
- a `.gguf` path or `file://`/`http(s)://` URL must carry the file's sha256 as a fragment
  (`https://host/x.gguf#sha256=<hex>`); the file is refused unless it matches. Without one the
  pull is refused, unless the operator set `allow_insecure_pull` and the request sets
  `insecure: true` (Ollama's own field): then the file is taken as it is, with a warning.

Nothing here knows HTTP servers: `ModelPull.prepare` does every check that can fail before any
progress is reported, `ModelPull.run` downloads and reports progress through a callback.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from agent.errors import AgentError
from models.errors import DownloadError, ModelsError

if TYPE_CHECKING:
    from agent.fleet.enroll import Enrollment
    from models.manifest import Manifest
    from models.store import ArtifactStore

_LOGGER = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25  # at most this often a "downloading" line per file (and at its end)
HTTP_TIMEOUT_S = 30.0
_SHA_FRAGMENT = re.compile(r"#sha256=([0-9a-fA-F]{64})$")
Emit = Callable[[dict[str, Any]], None]


class PullError(AgentError):
    """A pull failed; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PullSettings:
    """Where pulled models go, and whether unverified files may be pulled at all."""

    data_dir: Path
    allow_insecure: bool = False

    @classmethod
    def of(cls, settings: Any) -> PullSettings:
        """From AgentSettings (data_dir, allow_insecure_pull)."""
        return cls(Path(settings.data_dir), bool(getattr(settings, "allow_insecure_pull", False)))


def is_location(name: str) -> bool:
    """Whether a pull name is a path or URL rather than a registry `NAME:VERSION`."""
    bare = _SHA_FRAGMENT.sub("", name)
    return "://" in bare or bare.startswith(("/", "./", "../", "~")) or bare.endswith(".gguf")


class ModelPull:
    """One pull of `name`: `prepare()` (may raise PullError), then `run(emit)` in a thread."""

    def __init__(self, name: str, settings: PullSettings, *, insecure: bool = False) -> None:
        self.name = name
        self.settings = settings
        self.insecure = insecure
        self.cancel = threading.Event()  # set when the client goes away: downloads stop
        self._plan: Callable[[Emit], Path] | None = None

    @functools.cached_property
    def store(self) -> ArtifactStore:
        """The content-addressed store under the data dir (created on first use)."""
        from models.store import ArtifactStore

        return ArtifactStore(self.settings.data_dir / "store")

    @property
    def from_registry(self) -> bool:
        """Whether the name is a registry model (else a path or URL)."""
        return not is_location(self.name)

    def prepare(self) -> None:
        """Every check that can fail before a byte of the model is fetched."""
        if self.from_registry:
            self._plan = self._prepare_registry()
        else:
            self._plan = self._prepare_location()

    def run(self, emit: Emit) -> Path:
        """Download and verify; the model path to load. Blocking; call prepare() first."""
        if self._plan is None:
            self.prepare()
        assert self._plan is not None
        emit({"status": "pulling manifest"})
        path = self._plan(emit)
        emit({"status": "writing manifest"})
        return path

    # -- the registry ------------------------------------------------------------------------
    def _prepare_registry(self) -> Callable[[Emit], Path]:
        from agent.engines.registry import installed_engines
        from agent.model_loading import probe_profile
        from agent.selection import select_variant

        enrollment = self._enrollment()
        model, _, version = self.name.partition(":")
        if not version or version == "latest":
            raise PullError(
                f"name the version to pull from the control plane's registry: {model}:VERSION "
                "(the registry has no 'latest' for devices)"
            )
        base = f"{enrollment.artifacts.base_url.rstrip('/')}/{quote(model)}/{quote(version)}"
        headers = enrollment.artifact_headers()
        manifest_json = _get(f"{base}/manifest.json", headers, f"model {self.name}")
        signature = _get(f"{base}/manifest.sig", headers, f"signature of {self.name}")
        try:
            manifest = self.store.add_manifest(manifest_json, signature, enrollment.trusted_keys())
        except ModelsError as exc:
            raise PullError(f"manifest of {self.name} rejected: {exc.reason}") from exc
        if (manifest.name, manifest.version) != (model, version):
            raise PullError(f"the registry answered {manifest.ref} for {self.name}", 500)
        try:
            selection = select_variant(manifest, probe_profile(), installed_engines())
        except AgentError as exc:
            raise PullError(f"no variant of {manifest.ref} fits this device: {exc}") from exc

        def plan(emit: Emit) -> Path:
            return self._download_variant(manifest, selection.variant_id, base, headers, emit)

        return plan

    def _enrollment(self) -> Enrollment:
        from agent.fleet.enroll import EnrollmentError, load_enrollment

        try:
            enrollment = load_enrollment(self.settings.data_dir)
        except EnrollmentError as exc:
            raise PullError(str(exc), 500) from exc
        if enrollment is None:
            raise PullError(
                f"{self.name!r} is not a path or URL, and this agent is not enrolled with a "
                "control plane: pull a .gguf path or URL (with #sha256=<hex>), or enroll the agent"
            )
        return enrollment

    def _download_variant(
        self, manifest: Manifest, variant_id: str, base: str, headers: dict[str, str], emit: Emit
    ) -> Path:
        from agent.fleet.slots import slot_key

        for entry in manifest.variant(variant_id).files:
            url = f"{base}/files/{quote(entry.path)}"
            self._fetch(url, entry.sha256, entry.size, emit, headers)
        emit({"status": "verifying sha256 digest"})
        dest = (
            self.settings.data_dir
            / "models"
            / slot_key(manifest.name, manifest.version, variant_id)
        )
        if not dest.is_dir():
            try:
                self.store.materialize(manifest, variant_id, dest)
            except ModelsError as exc:
                raise PullError(f"cannot lay out {manifest.ref}: {exc.reason}", 500) from exc
        return dest

    # -- a path or URL ----------------------------------------------------------------------
    def _prepare_location(self) -> Callable[[Emit], Path]:
        match = _SHA_FRAGMENT.search(self.name)
        sha = match.group(1).lower() if match else None
        location = _SHA_FRAGMENT.sub("", self.name)
        parsed = urlparse(location)
        remote = parsed.scheme in ("http", "https")
        if parsed.scheme == "file":
            location = parsed.path
        elif parsed.scheme and not remote:
            raise PullError(f"cannot pull {location!r}: only http, https, file URLs and paths work")
        filename = Path(parsed.path if remote else location).name
        if not filename.endswith(".gguf"):
            raise PullError(f"{location} is not a .gguf file; pull a GGUF, or a NAME:VERSION")
        if sha is None and not (self.insecure and self.settings.allow_insecure):
            raise PullError(
                f"{location} carries no sha256, so the file cannot be verified: append "
                "#sha256=<hex of the file> to the name. Unverified pulls need "
                "allow_insecure_pull = true in the agent's settings and insecure: true in the "
                "request"
            )
        size = _remote_size(location) if remote else _local_size(Path(location).expanduser())
        if not remote:
            location = str(Path(location).expanduser())

        def plan(emit: Emit) -> Path:
            known = sha or self._unverified_sha(location, remote, size, emit)
            blob = self._fetch(location, known, size, emit, {})
            emit({"status": "verifying sha256 digest"})
            dest = self.settings.data_dir / "models" / "pulled" / known[:16] / filename
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(blob, dest)
            return dest

        return plan

    def _unverified_sha(self, location: str, remote: bool, size: int, emit: Emit) -> str:
        """The sha256 of a file pulled without one (insecure): hashed, or downloaded first."""
        _LOGGER.warning("pulling %s without a sha256 to check (insecure pull allowed)", location)
        if not remote:
            from models.files import hash_file

            return hash_file(Path(location))[0]
        from models.download import download

        partial = self.store.tmp / f"insecure-{threading.get_ident()}-{time.time_ns()}.partial"
        try:
            sha = download(location, partial, size, {}, self._progress(emit, "unverified", size))
            self.store.import_file(partial, sha)
        except ModelsError as exc:
            raise PullError(f"cannot download {location}: {exc.reason}", 500) from exc
        finally:
            partial.unlink(missing_ok=True)
        return sha

    # -- shared ------------------------------------------------------------------------------
    def _fetch(self, url: str, sha: str, size: int, emit: Emit, headers: dict[str, str]) -> Path:
        """The stored blob with this sha256, fetched if absent, reporting progress."""
        if self.store.has(sha):
            emit(
                {
                    "status": "downloading",
                    "digest": f"sha256:{sha}",
                    "total": size,
                    "completed": size,
                }
            )
            return self.store.path(sha)
        progress = self._progress(emit, sha, size)
        try:
            return self.store.fetch(url, sha, size, headers=headers, progress=progress)
        except DownloadError as exc:
            status = 500 if exc.transient else 400
            raise PullError(f"{self.name}: {exc.reason}", status) from exc
        except ModelsError as exc:
            raise PullError(f"{self.name}: {exc.reason}", 500) from exc

    def _progress(self, emit: Emit, sha: str, size: int) -> Callable[[int, int], None]:
        """A download's progress callback: throttled "downloading" lines, stops on cancel."""
        digest, last = f"sha256:{sha}", 0.0
        emit({"status": "downloading", "digest": digest, "total": size, "completed": 0})

        def progress(done: int, total: int) -> None:
            nonlocal last
            if self.cancel.is_set():
                raise PullError("pull cancelled: the client went away (pull again to resume)")
            now = time.monotonic()
            if done >= total or now - last >= PROGRESS_INTERVAL_S:
                last = now
                emit({"status": "downloading", "digest": digest, "total": size, "completed": done})

        return progress


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
