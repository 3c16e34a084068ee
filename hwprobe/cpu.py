"""CPU facts from <root>/proc/cpuinfo, corrected by the running Python on the live system."""

from __future__ import annotations

import os
import platform
import sys

from hwprobe.cpuinfo import CpuFacts, parse_cpuinfo
from hwprobe.profile import CpuInfo
from hwprobe.rootfs import RootFS

_MACHINE_ARCH = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i386": "i686",
    "i686": "i686",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8l": "armv7l",
    "armv7l": "armv7l",
    "armv6l": "armv6l",
}


def live_arch() -> str | None:
    """Architecture the running Python executes (a 32-bit Python on a 64-bit kernel is armv7l)."""
    arch = _MACHINE_ARCH.get(platform.machine().lower())
    if arch == "aarch64" and sys.maxsize <= 2**32:
        return "armv7l"
    if arch == "x86_64" and sys.maxsize <= 2**32:
        return "i686"
    return arch


def read_cpu(fs: RootFS, *, live: bool) -> CpuFacts:
    """Parse <root>/proc/cpuinfo; on the live system fill gaps from Python itself."""
    text = fs.read_text("proc/cpuinfo")
    facts = parse_cpuinfo(text) if text is not None else CpuFacts()
    if text is not None and facts.cores is None:
        fs.warn("proc/cpuinfo: no processor entries found; CPU details unknown")
    elif text is None and not fs.exists("proc/cpuinfo"):
        fs.warn("proc/cpuinfo: missing; CPU details unknown")
    for note in facts.notes:
        fs.warn(note)
    if live:
        arch = live_arch()
        if arch is not None and facts.arch is not None and arch != facts.arch:
            fs.warn(f"proc/cpuinfo suggests {facts.arch} but Python runs as {arch}: using {arch}")
        facts.arch = arch or facts.arch
        facts.cores = facts.cores or os.cpu_count()
    return facts


def cpu_info(facts: CpuFacts) -> CpuInfo:
    """The public CPU section of the profile."""
    return CpuInfo(arch=facts.arch, model=facts.model, cores=facts.cores, features=facts.features)
