"""The disk and memory checks a pull and a rollout run before downloading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.capacity import (
    DISK_MARGIN_MIN_BYTES,
    DiskUsage,
    InsufficientMemory,
    InsufficientStorage,
    check_disk,
    check_memory,
    disk_margin_bytes,
    filesystem_usage,
    format_bytes,
)

MIB, GIB = 1 << 20, 1 << 30


def test_the_margin_is_5_percent_of_the_disk_or_256_mib() -> None:
    assert disk_margin_bytes(1 * GIB) == DISK_MARGIN_MIN_BYTES == 256 * MIB
    assert disk_margin_bytes(100 * GIB) == 5 * GIB


def test_a_path_not_made_yet_is_measured_on_its_parents_filesystem(tmp_path: Path) -> None:
    usage = filesystem_usage(tmp_path / "agent" / "store")
    real = shutil.disk_usage(tmp_path)
    assert usage.total == real.total
    assert not (tmp_path / "agent").exists()


def test_disk_fits_only_with_the_margin_left_free(tmp_path: Path) -> None:
    disk = DiskUsage(total=1 * GIB, free=300 * MIB)  # 44 MiB usable
    check_disk("model x", 44 * MIB, tmp_path, lambda _: disk)
    with pytest.raises(InsufficientStorage) as err:
        check_disk("model x", 44 * MIB + 1, tmp_path, lambda _: disk)
    assert str(err.value).startswith(
        f"model x needs 44 MiB on {tmp_path}, 300 MiB free, of which 256 MiB stays free"
    )
    big = DiskUsage(total=100 * GIB, free=5 * GIB + 100 * MIB)  # 5 GiB stay free
    with pytest.raises(InsufficientStorage, match="of which 5.0 GiB stays free"):
        check_disk("model x", 101 * MIB, tmp_path, lambda _: big)


def test_nothing_to_download_needs_no_disk(tmp_path: Path) -> None:
    check_disk("model x", 0, tmp_path, lambda _: DiskUsage(total=GIB, free=0))


def test_memory_is_refused_with_both_figures_and_unknown_memory_passes() -> None:
    check_memory("model x", 2 * GIB, None)
    check_memory("model x", 2 * GIB, 2 * GIB)
    with pytest.raises(InsufficientMemory) as err:
        check_memory("model x", 2 * GIB, GIB + GIB // 2)
    assert str(err.value).startswith(
        "model x requires more memory (2.0 GiB) than is available (1.5 GiB)"
    )


def test_sizes_read_as_an_operator_reads_them() -> None:
    assert format_bytes(1288 * MIB) == "1.3 GiB"
    assert format_bytes(300 * MIB) == "300 MiB"
    assert format_bytes(12 * 1024) == "12 KiB"
    assert format_bytes(10) == "10 bytes"
