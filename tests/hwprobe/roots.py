"""Helpers for hwprobe tests: the real hardware samples and writers for synthetic roots."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from hwprobe import probe
from hwprobe.profile import HardwareProfile

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


def probe_files(root: Path, files: Mapping[str, str | bytes]) -> HardwareProfile:
    """Write `files` (path under the root -> content) and probe the root."""
    for rel, content in files.items():
        write_file(root, rel, content)
    return probe(root)


def field(profile: HardwareProfile, dotted: str) -> object:
    """`profile.jetson.soc` for "jetson.soc"."""
    return functools.reduce(getattr, dotted.split("."), profile)


def check_probe(
    root: Path,
    files: Mapping[str, str | bytes],
    expected: Mapping[str, object],
    warning: str | None,
) -> HardwareProfile:
    """Probe `files`: each dotted field of `expected` has its value, and `warning` was given."""
    profile = probe_files(root, files)
    assert {name: field(profile, name) for name in expected} == expected
    assert warning is None or warned(profile, warning)
    return profile


def warned(profile: HardwareProfile, text: str) -> bool:
    """Whether one of the profile's warnings contains `text`."""
    return any(text in w for w in profile.warnings)
