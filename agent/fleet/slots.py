"""Model slots on disk: `slots/<name>-<version>-<variant>/` and an atomically swapped pointer.

The `active` pointer is a symlink replaced with os.replace, so after a crash at any moment it
names either the old slot or the new one, never nothing. The slot that was active before the
last switch is kept (the `previous` pointer) so a rollback needs no download. No active pointer
at all means "serve nothing": a fresh store, or `deactivate` after a desired state with no model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from agent.engines.base import LoadOptions
from agent.errors import ModelLoadError
from agent.model_loading import EngineFactory, LoadedModel, load_variant, probe_profile
from agent.selection import gpu_memory_budget
from models.files import atomic_symlink, fsync_dir
from models.manifest import Manifest

_LOGGER = logging.getLogger(__name__)

SLOT_FILE = "slot.json"
ACTIVE = "active"
PREVIOUS = "previous"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Slot:
    """One installed model variant."""

    name: str
    version: str
    variant: str
    engine: str
    path: Path
    device: str = "CPU"

    @property
    def key(self) -> str:
        """The slot's directory name."""
        return slot_key(self.name, self.version, self.variant)


def slot_key(name: str, version: str, variant: str) -> str:
    """`<name>-<version>-<variant>` with anything unsafe for a file name replaced."""
    return _UNSAFE.sub("_", f"{name}-{version}-{variant}")


class SlotStore:
    """The slots under one directory and the pointers that choose between them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def staging_dir(self, name: str, version: str, variant: str) -> Path:
        """A fresh hidden directory to build a slot in; `install` moves it into place."""
        path = self.root / f".staging-{slot_key(name, version, variant)}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def install(
        self, staging: Path, name: str, version: str, variant: str, engine: str, device: str = "CPU"
    ) -> Slot:
        """Move a staged directory into its slot (replacing an uncommitted one of that name)."""
        meta = {
            "name": name,
            "version": version,
            "variant": variant,
            "engine": engine,
            "device": device,
        }
        (staging / SLOT_FILE).write_text(json.dumps(meta), encoding="utf-8")
        target = self.root / slot_key(name, version, variant)
        if target.exists():
            if self._pointed(ACTIVE) == target.name:
                shutil.rmtree(staging)
                return self._read(target)
            shutil.rmtree(target)
        os.replace(staging, target)
        fsync_dir(self.root)
        return self._read(target)

    def get(self, name: str, version: str, variant: str) -> Slot | None:
        """The installed slot for this model variant, if there is one."""
        path = self.root / slot_key(name, version, variant)
        return self._read(path) if (path / SLOT_FILE).is_file() else None

    def find(self, name: str, version: str) -> Slot | None:
        """Any installed slot of this model version (the active one first)."""
        active = self.active()
        if active and (active.name, active.version) == (name, version):
            return active
        for path in sorted(self.root.iterdir()):
            if path.is_symlink() or path.name.startswith(".") or not path.is_dir():
                continue
            slot = self._read(path) if (path / SLOT_FILE).is_file() else None
            if slot and (slot.name, slot.version) == (name, version):
                return slot
        return None

    def active(self) -> Slot | None:
        """The committed slot the agent serves after a restart."""
        return self._pointer(ACTIVE)

    def previous(self) -> Slot | None:
        """The slot that was active before the last switch."""
        return self._pointer(PREVIOUS)

    def activate(self, slot: Slot) -> None:
        """Commit `slot`: the active pointer moves to it in one atomic step."""
        current = self._pointed(ACTIVE)
        if current == slot.key:
            return
        if current is not None:
            self._point(PREVIOUS, current)
        self._point(ACTIVE, slot.key)
        _LOGGER.info("active slot is now %s (was %s)", slot.key, current)

    def has_active(self) -> bool:
        """Whether an active pointer exists (even one naming a slot that no longer reads)."""
        return self._pointed(ACTIVE) is not None

    def deactivate(self) -> Slot | None:
        """Commit "serve nothing": the active slot becomes `previous` and the pointer goes."""
        current = self._pointed(ACTIVE)
        if current is None:
            return None
        slot = self._pointer(ACTIVE)
        self._point(PREVIOUS, current)  # kept on disk: bringing it back needs no download
        (self.root / ACTIVE).unlink()
        fsync_dir(self.root)
        _LOGGER.info("no active slot now (was %s)", current)
        return slot

    def prune(self) -> list[str]:
        """Delete slots and leftover staging directories that no pointer names."""
        keep = {self._pointed(ACTIVE), self._pointed(PREVIOUS)}
        removed: list[str] = []
        for path in self.root.iterdir():
            if path.is_symlink() or path.name in keep or not path.is_dir():
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

    def _point(self, pointer: str, key: str) -> None:
        atomic_symlink(self.root / pointer, key)

    def _pointed(self, pointer: str) -> str | None:
        link = self.root / pointer
        try:
            return os.readlink(link)
        except OSError:
            return None

    def _pointer(self, pointer: str) -> Slot | None:
        key = self._pointed(pointer)
        if key is None or not (self.root / key / SLOT_FILE).is_file():
            return None
        return self._read(self.root / key)

    def _read(self, path: Path) -> Slot:
        meta = json.loads((path / SLOT_FILE).read_text(encoding="utf-8"))
        return Slot(
            name=str(meta["name"]),
            version=str(meta["version"]),
            variant=str(meta["variant"]),
            engine=str(meta.get("engine", "")),
            path=path,
            device=str(meta.get("device", "CPU")),
        )


def load_slot(
    slot: Slot, engine_factory: EngineFactory, options: LoadOptions | None = None
) -> LoadedModel:
    """Load a slot's variant into a new engine (blocking); the caller decides when it serves.

    `options`: the agent's settings for a load (threads, cache, parallel, CPU math); the slot
    gives the device, the GPU budget is read now.
    """
    started = time.perf_counter()
    try:
        manifest = Manifest.load(slot.path)
        variant = manifest.variant(slot.variant)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"slot {slot.key} has no usable manifest: {exc}") from exc
    engine = engine_factory(slot.engine)
    budget = None
    if slot.device.startswith("GPU"):  # how much of the GPU is free is a fact of now, not staging
        budget = gpu_memory_budget(slot.engine, slot.device, probe_profile())
    options = replace(options or LoadOptions(), device=slot.device, gpu_memory_bytes=budget)
    loaded = load_variant(engine, slot.engine, slot.path, manifest, variant, options, started)
    offload = engine.stats().extra.get("offload")
    loaded.explanation = f"slot {slot.key}: {variant.id} on {slot.engine} ({loaded.device})"
    loaded.explanation += f": {offload}" if offload else ""
    return loaded
