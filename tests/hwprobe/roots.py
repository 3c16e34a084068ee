"""Helpers for hwprobe tests: the real hardware samples and writers for synthetic roots."""

from __future__ import annotations

import os
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "hw"


def write_file(root: Path, rel: str, content: str | bytes) -> Path:
    """Create ``root/rel`` with ``content`` (text is written as UTF-8)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(data)
    return path


def symlink(root: Path, rel: str, target: str) -> None:
    """Create a (possibly dangling) symlink ``root/rel -> target``, like sysfs driver links."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


X86_CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) Ultra 7 155H\n"
    "flags\t\t: fpu lm sse4_2 avx avx2 fma f16c avx_vnni\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) Ultra 7 155H\n"
    "flags\t\t: fpu lm sse4_2 avx avx2 fma f16c avx_vnni\n"
)
MEMINFO_16G = (
    "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n"
)
