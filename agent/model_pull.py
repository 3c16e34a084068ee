"""Pulling a model onto this device by name: the control plane's registry, a path or a URL.

Verification follows the rollout path (agent/fleet/staging.py):

- `NAME:VERSION` comes from the control plane's registry when the agent is enrolled
  (agent/pull_registry.py): the manifest's signature is checked against the keys enrollment
  gave, then this device's variant is downloaded with the artifact token, each file checked
  against the manifest's sha256 as it arrives (models.store), and laid out under
  `data_dir/models/` as `run NAME:VERSION` does.
- a `.gguf` path or `file://`/`http(s)://` URL (agent/pull_location.py) must carry the file's
  sha256 as a fragment (`https://host/x.gguf#sha256=<hex>`); the file is refused unless it
  matches. Without one the pull is refused, unless the operator set `allow_insecure_pull` and
  the request sets `insecure: true` (Ollama's own field): then the file is taken as it is.

Before anything is written the model must fit (agent/capacity.py): its memory need within the
memory hwprobe reports available (else 400), the bytes still to fetch within the store's free
disk less its margin (else 507); the disk is checked again when the download starts.

Nothing here knows HTTP servers: `ModelPull.prepare` does every check that can fail before any
progress is reported, `ModelPull.run` downloads and reports progress through a callback.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.capacity import (
    DiskProbe,
    InsufficientMemory,
    InsufficientStorage,
    check_disk,
    check_memory,
    filesystem_usage,
)
from agent.errors import AgentError
from models.errors import DownloadError, ModelsError

if TYPE_CHECKING:
    from hwprobe.profile import HardwareProfile
    from models.store import ArtifactStore

PROGRESS_INTERVAL_S = 0.25  # at most this often a "downloading" line per file (and at its end)
HTTP_TIMEOUT_S = 30.0
INSUFFICIENT_STORAGE = 507  # HTTP status of a pull the disk cannot hold (RFC 4918)
_SHA_FRAGMENT = re.compile(r"#sha256=([0-9a-fA-F]{64})$")
Emit = Callable[[dict[str, Any]], None]


class PullError(AgentError):
    """A pull failed; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PullSettings:
    """Where pulled models go, whether unverified files may be pulled, what the device has."""

    data_dir: Path
    allow_insecure: bool = False
    profile: HardwareProfile | None = None  # None: probe this device when a pull is prepared
    disk_usage: DiskProbe = filesystem_usage

    @classmethod
    def of(cls, settings: Any) -> PullSettings:
        """From AgentSettings (data_dir, allow_insecure_pull)."""
        return cls(Path(settings.data_dir), bool(getattr(settings, "allow_insecure_pull", False)))


@dataclass(frozen=True)
class PullPlan:
    """A prepared pull: what it is called in errors, what is left to fetch, and the fetching."""

    what: str
    to_fetch: Callable[[], int]  # bytes still to write into the store, counted afresh each call
    download: Callable[[Emit], Path]
    record: Callable[[], None] = lambda: None  # written once every check passed (a manifest)


def is_location(name: str) -> bool:
    """Whether a pull name is a path or URL rather than a registry `NAME:VERSION`."""
    bare = _SHA_FRAGMENT.sub("", name)
    return "://" in bare or bare.startswith(("/", "./", "../", "~")) or bare.endswith(".gguf")


def sha_fragment(name: str) -> tuple[str, str | None]:
    """A location without its `#sha256=<hex>`, and the sha256 (lowercase) if it had one."""
    match = _SHA_FRAGMENT.search(name)
    return _SHA_FRAGMENT.sub("", name), match.group(1).lower() if match else None


class ModelPull:
    """One pull of `name`: `prepare()` (may raise PullError), then `run(emit)` in a thread."""

    def __init__(self, name: str, settings: PullSettings, *, insecure: bool = False) -> None:
        self.name = name
        self.settings = settings
        self.insecure = insecure
        self.cancel = threading.Event()  # set when the client goes away: downloads stop
        self._plan: PullPlan | None = None

    @functools.cached_property
    def store(self) -> ArtifactStore:
        """The content-addressed store under the data dir (created on first use)."""
        from models.store import ArtifactStore

        return ArtifactStore(self.store_root)

    @property
    def store_root(self) -> Path:
        """Where the store is, whether or not it exists yet."""
        return self.settings.data_dir / "store"

    @property
    def from_registry(self) -> bool:
        """Whether the name is a registry model (else a path or URL)."""
        return not is_location(self.name)

    def profile(self) -> HardwareProfile:
        """The hardware profile the agent was given, else this device probed now."""
        if self.settings.profile is not None:
            return self.settings.profile
        from agent.model_loading import probe_profile

        return probe_profile()

    def prepare(self) -> None:
        """Every check that can fail before a byte of the model is fetched."""
        if self.from_registry:
            from agent.pull_registry import plan_registry_pull

            plan = plan_registry_pull(self)
        else:
            from agent.pull_location import plan_location_pull

            plan = plan_location_pull(self)
        self.check_disk(plan)
        plan.record()
        self._plan = plan

    def run(self, emit: Emit) -> Path:
        """Download and verify; the model path to load. Blocking; call prepare() first."""
        if self._plan is None:
            self.prepare()
        assert self._plan is not None
        emit({"status": "pulling manifest"})
        self.check_disk(self._plan)  # another pull may have taken the room since prepare()
        path = self._plan.download(emit)
        emit({"status": "writing manifest"})
        return path

    # -- the checks before a download ---------------------------------------------------------
    def check_disk(self, plan: PullPlan) -> None:
        """PullError 507 unless what is left to fetch fits the store's disk with its margin."""
        try:
            check_disk(plan.what, plan.to_fetch(), self.store_root, self.settings.disk_usage)
        except InsufficientStorage as exc:
            raise PullError(str(exc), INSUFFICIENT_STORAGE) from exc

    @staticmethod
    def check_memory(what: str, need_bytes: int, available: int | None) -> None:
        """PullError 400 when the model needs more memory than the device has available."""
        try:
            check_memory(what, need_bytes, available)
        except InsufficientMemory as exc:
            raise PullError(str(exc)) from exc

    def missing_bytes(self, files: Iterable[tuple[str, int]]) -> int:
        """Bytes of the (sha256, size) files not in the store yet (reads, never creates it)."""
        present = self.store.has if self.store_root.is_dir() else (lambda _sha: False)
        return sum(size for sha, size in files if not present(sha))

    # -- fetching into the store --------------------------------------------------------------
    def fetch(self, url: str, sha: str, size: int, emit: Emit, headers: dict[str, str]) -> Path:
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
        progress = self.progress(emit, sha, size)
        try:
            return self.store.fetch(url, sha, size, headers=headers, progress=progress)
        except DownloadError as exc:
            status = 500 if exc.transient else 400
            raise PullError(f"{self.name}: {exc.reason}", status) from exc
        except ModelsError as exc:
            raise PullError(f"{self.name}: {exc.reason}", 500) from exc

    def progress(self, emit: Emit, sha: str, size: int) -> Callable[[int, int], None]:
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
