"""Whether a model fits this device, checked before a byte of it is downloaded.

Two checks, each owned here and shared by `/api/pull` (agent/model_pull.py) and the rollout's
download (agent/fleet/staging.py):

- disk: the bytes still to download must fit the store's filesystem with a margin left free
  (`disk_margin_bytes`), because a full disk also stops the outbox, the logs and the database;
- memory: the model's need (`agent.selection.memory_need_bytes`) must fit the memory
  available. Unknown memory is not a reason to refuse, as in selection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from agent.errors import AgentError

MIB = 1 << 20
GIB = 1 << 30
# Left free on the store's filesystem after a download: the larger of a share of the disk and
# a floor, so a small SD card keeps room for the outbox and the logs, and a large disk keeps
# the head room its other users expect (as package managers keep 5 % for root).
DISK_MARGIN_FRACTION = 0.05
DISK_MARGIN_MIN_BYTES = 256 * MIB


class DiskUsage(NamedTuple):
    """Size and free bytes (for this user) of one filesystem."""

    total: int
    free: int


DiskProbe = Callable[[Path], DiskUsage]


class DoesNotFit(AgentError):
    """The model cannot be taken on by this device; the message says what is short."""


class InsufficientStorage(DoesNotFit):
    """The download does not fit the disk with its margin; the message has the numbers."""


class InsufficientMemory(DoesNotFit):
    """The model needs more memory than the device has available."""


def filesystem_usage(path: Path) -> DiskUsage:
    """The filesystem that holds `path`, or would: its nearest existing parent's."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    return DiskUsage(total=usage.total, free=usage.free)


def disk_margin_bytes(total: int) -> int:
    """Bytes kept free on a filesystem of `total` bytes."""
    return max(int(total * DISK_MARGIN_FRACTION), DISK_MARGIN_MIN_BYTES)


def format_bytes(n: int) -> str:
    """`1.2 GiB`, `300 MiB`, `12 KiB`: sizes as an operator reads them."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def check_disk(
    what: str, download_bytes: int, where: Path, probe: DiskProbe = filesystem_usage
) -> None:
    """Raise InsufficientStorage unless `download_bytes` fit under `where` with the margin."""
    if download_bytes <= 0:
        return
    usage = probe(where)
    margin = disk_margin_bytes(usage.total)
    if usage.free - margin >= download_bytes:
        return
    raise InsufficientStorage(
        f"{what} needs {format_bytes(download_bytes)} on {where}, {format_bytes(usage.free)} "
        f"free, of which {format_bytes(margin)} stays free for the agent's outbox and logs: "
        "free space on that disk or pick a smaller model"
    )


def check_memory(what: str, need_bytes: int, available: int | None) -> None:
    """Raise InsufficientMemory when `need_bytes` exceed `available` (None: unknown, no check)."""
    if available is None or need_bytes <= available:
        return
    raise InsufficientMemory(
        f"{what} requires more memory ({format_bytes(need_bytes)}) than is available "
        f"({format_bytes(available)}): free memory or pick a smaller model"
    )
