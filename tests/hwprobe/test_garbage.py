"""Broken inputs (synthetic): junk, unreadable files and folders where files belong.

Each gives a profile with that part unknown and a warning; none raises.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hwprobe import probe
from tests.hwprobe.roots import MEMINFO_16G, X86_CPUINFO, check_probe, warned, write_file

JUNK = bytes(range(256)) * 8


def test_binary_junk_everywhere(fake_root: Path) -> None:
    """Random bytes in every file hwprobe reads."""
    for rel in (
        "proc/cpuinfo",
        "proc/meminfo",
        "proc/device-tree/model",
        "proc/device-tree/compatible",
        "etc/nv_tegra_release",
        "sys/fs/cgroup/memory.max",
        "sys/class/drm/card0/device/vendor",
    ):
        write_file(fake_root, rel, JUNK)
    profile = probe(fake_root)
    assert profile.cpu.arch is None
    assert profile.memory.total_bytes is None
    assert profile.jetson is None
    assert profile.accelerators == []
    assert warned(profile, "proc/cpuinfo: not text")
    assert warned(profile, "proc/device-tree/model")


def test_directories_where_files_are_expected(fake_root: Path) -> None:
    """proc/cpuinfo and proc/meminfo as folders."""
    (fake_root / "proc" / "cpuinfo").mkdir(parents=True)
    (fake_root / "proc" / "meminfo").mkdir()
    profile = probe(fake_root)
    assert profile.cpu.cores is None
    assert profile.memory.total_bytes is None
    assert warned(profile, "proc/cpuinfo: is a directory")


def test_fifo_is_not_read(fake_root: Path) -> None:
    """A named pipe would block a reader forever; it is reported instead."""
    (fake_root / "proc").mkdir()
    os.mkfifo(fake_root / "proc" / "cpuinfo")
    profile = probe(fake_root)
    assert warned(profile, "not a regular file")


def test_permission_denied(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreadable meminfo. Tests run as root here, which ignores file modes, so the
    PermissionError the kernel would raise is injected at Path.open."""
    write_file(fake_root, "proc/cpuinfo", X86_CPUINFO)
    meminfo = write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    meminfo.chmod(0)
    real_open = Path.open

    def guarded_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == meminfo:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded_open)
    profile = probe(fake_root)
    assert profile.memory.total_bytes is None
    assert profile.cpu.arch == "x86_64"
    assert "proc/meminfo: permission denied" in profile.warnings


@pytest.mark.parametrize(
    ("files", "expected", "warning"),
    [
        pytest.param(
            {"proc/device-tree/model": "Board\x1b[31m\x07\0"},
            {"board.model": None},
            "control characters",
            id="valid UTF-8 that is not text (escape codes) does not reach board.model",
        ),
        pytest.param(
            {
                "sys/bus/pci/devices/0000:00:02.0/vendor": "intel\n",
                "sys/bus/pci/devices/0000:00:02.0/class": "0x030000\n",
            },
            {"accelerators": []},
            "expected a hex number",
            id="a vendor file that is not hex is a warning, and the device is skipped",
        ),
        pytest.param(
            {"proc": "not a folder", "sys": "not a folder either"},
            {"cpu.arch": None, "device_class": "cpu-x86"},
            None,
            id="proc is a plain file, so proc/cpuinfo cannot exist",
        ),
        pytest.param(
            {},
            {"cpu.arch": None, "device_class": "cpu-x86"},
            "architecture unknown",
            id="nothing at all: a cpu-x86 guess, with warnings saying why",
        ),
    ],
)
def test_broken_files(
    fake_root: Path, files: dict[str, str], expected: dict[str, object], warning: str | None
) -> None:
    check_probe(fake_root, files, expected, warning)
