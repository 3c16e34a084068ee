"""The download step of a rollout: fetch, verify and install a desired model as a new slot.

manifest + signature -> verify the signature against the trusted keys -> pick this device's
variant -> check memory and the store's free disk (agent/capacity.py, as /api/pull does) ->
download its files (resumable, through the artifact store, which checks each file's sha256 as
it takes it in) -> move the staged directory into its slot (not yet active). Each check runs
once: the signature before any download, each sha256 when its file arrives (a file already in
the store was checked when it arrived).
Every fetch is retried through control-plane outages (agent/fleet/fetch_retry.py).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.capacity import DiskProbe, DoesNotFit, check_disk, check_memory, filesystem_usage
from agent.errors import AgentError
from agent.fleet.fetch_retry import FetchUnavailable, RetryWindow
from agent.fleet.rollout_events import RolloutFailed, RolloutReporter
from agent.fleet.slots import Slot, SlotStore
from agent.selection import memory_need_bytes
from models.blobs import BlobStore
from models.download import TRANSIENT_STATUSES
from models.errors import ModelsError
from models.files import safe_relative_path
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest, Variant
from models.protocol import DesiredModel
from models.signing import verify_manifest

HTTP_TIMEOUT_S = 30.0


class Selection(Protocol):
    """What agent.selection.select_variant returns (the fields used here)."""

    @property
    def variant_id(self) -> str:
        """The manifest variant this device runs."""
        ...

    @property
    def engine(self) -> str:
        """The engine that runs it."""
        ...

    @property
    def device(self) -> str:
        """CPU, GPU or NPU."""
        ...


Selector = Callable[[Manifest], Selection]


def fetch_bytes(url: str, headers: Mapping[str, str]) -> bytes:
    """GET a small document (manifest, signature) over HTTP(S), or read a file:// URL.

    Raises FetchUnavailable when a retry may succeed, RolloutFailed when it cannot.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        try:
            return Path(url2pathname(parsed.path)).read_bytes()
        except OSError as exc:
            raise RolloutFailed(f"cannot fetch {url}: {exc.strerror or exc}") from exc
    import httpx

    try:
        resp = httpx.get(url, headers=dict(headers), timeout=HTTP_TIMEOUT_S, follow_redirects=True)
    except httpx.TransportError as exc:  # refused, reset, timed out: the server may come back
        raise FetchUnavailable(f"cannot fetch {url}: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise RolloutFailed(f"cannot fetch {url}: {exc}") from exc
    if resp.status_code in TRANSIENT_STATUSES:
        raise FetchUnavailable(f"cannot fetch {url}: HTTP {resp.status_code}")
    if resp.status_code != 200:
        raise RolloutFailed(f"cannot fetch {url}: HTTP {resp.status_code}")
    return resp.content


def sibling_url(manifest_url: str, rel_path: str) -> str:
    """The URL of a file next to the manifest."""
    return manifest_url.rsplit("/", 1)[0] + "/" + rel_path


def file_url(target: DesiredModel, rel_path: str) -> str:
    """Where one variant file of the desired model is downloaded from."""
    if target.files_url:
        return target.files_url.rstrip("/") + "/" + rel_path
    return sibling_url(target.manifest_url, rel_path)


@dataclass
class Stager:
    """Turns a desired model into an installed, verified slot for this device."""

    slots: SlotStore
    store: BlobStore
    select: Selector
    trusted_keys: list[Ed25519PublicKey]
    headers: Mapping[str, str] = field(default_factory=dict)
    memory_available: Callable[[], int] | None = None
    disk_usage: DiskProbe | None = filesystem_usage
    retries: RetryWindow = field(default_factory=RetryWindow)

    def _fetch_document(self, url: str) -> bytes:
        return self.retries.run(f"fetch {url}", lambda: fetch_bytes(url, self.headers))

    def stage(self, target: DesiredModel, report: RolloutReporter) -> Slot:
        """Download, verify and install `target` (blocking); raises RolloutFailed."""
        staging_root = self.slots.staging_dir(target.name, target.version, "download")
        (staging_root / MANIFEST_FILE).write_bytes(self._fetch_document(target.manifest_url))
        sig_url = sibling_url(target.manifest_url, SIGNATURE_FILE)
        (staging_root / SIGNATURE_FILE).write_bytes(self._fetch_document(sig_url))
        report("verifying", detail="manifest signature")
        try:
            manifest = verify_manifest(staging_root, self.trusted_keys)
        except ModelsError as exc:
            raise RolloutFailed(f"manifest rejected: {exc}") from exc
        if (manifest.name, manifest.version) != (target.name, target.version):
            raise RolloutFailed(f"manifest is {manifest.ref}, not {target.name}:{target.version}")
        try:
            selection = self.select(manifest)
        except AgentError as exc:
            raise RolloutFailed(f"no variant fits this device: {exc}") from exc
        variant = manifest.variant(selection.variant_id)
        self._check_room(manifest.ref, variant, selection.engine)
        total, done_before = variant.size_bytes, 0
        report.progress(0, total)
        for entry in variant.files:

            def progress(done: int, size: int, base: int = done_before) -> None:
                report.progress(base + done, total)

            url = file_url(target, entry.path)
            fetch = functools.partial(
                self.store.fetch,
                url,
                entry.sha256,
                entry.size,
                headers=self.headers,
                progress=progress,
            )
            blob = self.retries.run(f"download {url}", fetch)
            dest = staging_root / safe_relative_path(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blob, dest)
            done_before += entry.size
        report(
            "verifying",
            detail="sha256 of every file checked as it arrived",
            bytes_done=total,
            bytes_total=total,
        )
        return self.slots.install(
            staging_root,
            manifest.name,
            manifest.version,
            variant.id,
            selection.engine,
            selection.device,
        )

    def _check_room(self, ref: str, variant: Variant, engine: str) -> None:
        """Refuse before downloading when the variant cannot fit memory or the store's disk."""
        what = f"model {ref} ({variant.id})"
        try:
            if self.memory_available is not None:
                need = memory_need_bytes(variant.memory_bytes, engine)
                check_memory(what, need, self.memory_available())
            if self.disk_usage is not None:
                missing = sum(f.size for f in variant.files if not self.store.has(f.sha256))
                check_disk(what, missing, self.store.root, self.disk_usage)
        except DoesNotFit as exc:
            raise RolloutFailed(str(exc)) from exc


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        dest.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dest)
