"""Memory from meminfo and cgroup limits, on synthetic roots (no public sample has a cgroup)."""

from __future__ import annotations

from pathlib import Path

from hwprobe import probe
from tests.hwprobe.roots import MEMINFO_16G, write_file

KIB = 1024


def test_meminfo_with_mem_available(fake_root: Path) -> None:
    """Synthetic: MemAvailable is used as is."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    memory = probe(fake_root).memory
    assert memory.total_bytes == 16384000 * KIB
    assert memory.available_bytes == 12000000 * KIB


def test_missing_mem_available_falls_back_to_free_buffers_cached(fake_root: Path) -> None:
    """Synthetic: a pre-3.14 kernel without MemAvailable."""
    write_file(
        fake_root,
        "proc/meminfo",
        "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n",
    )
    profile = probe(fake_root)
    assert profile.memory.available_bytes == 420 * KIB
    assert any("MemAvailable" in w for w in profile.warnings)


def test_cgroup_v2_limit_caps_total_and_available(fake_root: Path) -> None:
    """Synthetic: memory.max 4 GiB with 1 GiB used caps a 16 GB machine."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "sys/fs/cgroup/memory.max", f"{4 << 30}\n")
    write_file(fake_root, "sys/fs/cgroup/memory.current", f"{1 << 30}\n")
    memory = probe(fake_root).memory
    assert memory.total_bytes == 4 << 30
    assert memory.available_bytes == 3 << 30


def test_cgroup_max_means_unlimited(fake_root: Path) -> None:
    """Synthetic: 'max' leaves the meminfo figures alone."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "sys/fs/cgroup/memory.max", "max\n")
    assert probe(fake_root).memory.total_bytes == 16384000 * KIB


def test_cgroup_larger_than_ram_changes_nothing(fake_root: Path) -> None:
    """Synthetic: the smaller of the two wins, so a generous limit is ignored."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "sys/fs/cgroup/memory.max", f"{64 << 30}\n")
    memory = probe(fake_root).memory
    assert memory.total_bytes == 16384000 * KIB
    assert memory.available_bytes == 12000000 * KIB


def test_nested_cgroup_from_proc_self_cgroup(fake_root: Path) -> None:
    """Synthetic: the process's own cgroup folder (from proc/self/cgroup) is read too."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "proc/self/cgroup", "0::/system.slice/agent.service\n")
    write_file(fake_root, "sys/fs/cgroup/system.slice/agent.service/memory.max", f"{2 << 30}\n")
    assert probe(fake_root).memory.total_bytes == 2 << 30


def test_cgroup_v1_limit(fake_root: Path) -> None:
    """Synthetic: cgroup v1 limit_in_bytes; its 'unlimited' huge value is ignored."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert probe(fake_root).memory.total_bytes == 16384000 * KIB
    write_file(fake_root, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{1 << 30}\n")
    assert probe(fake_root).memory.total_bytes == 1 << 30


def test_garbage_memory_max_is_a_warning(fake_root: Path) -> None:
    """Synthetic: a non-number in memory.max is reported and ignored."""
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    write_file(fake_root, "sys/fs/cgroup/memory.max", "lots\n")
    profile = probe(fake_root)
    assert profile.memory.total_bytes == 16384000 * KIB
    assert any("memory.max" in w for w in profile.warnings)
