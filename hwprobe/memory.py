"""Memory from <root>/proc/meminfo, capped by the cgroup memory limit when one is set."""

from __future__ import annotations

from hwprobe.profile import MemoryInfo
from hwprobe.rootfs import RootFS

# cgroup v1 reports "no limit" as a huge page-aligned number rather than "max".
_V1_UNLIMITED = 1 << 60


def parse_meminfo(text: str) -> dict[str, int]:
    """Map meminfo keys to bytes (values given in kB are converted)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        values[key.strip()] = int(parts[0]) * scale
    return values


def _cgroup_v2_dirs(fs: RootFS) -> list[str]:
    """The process's cgroup v2 folder and its ancestors (limits of ancestors apply too)."""
    path = ""
    for line in (fs.read_text("proc/self/cgroup") or "").splitlines():
        if line.startswith("0::"):
            path = line[3:].strip().strip("/")
    parts = [p for p in path.split("/") if p and p != ".."]
    return ["sys/fs/cgroup/" + "/".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _read_int(fs: RootFS, rel: str) -> int | None:
    value = fs.read_value(rel)
    if value is None or value == "max":
        return None
    if not value.isdigit():
        fs.warn(f"{rel}: expected a number or 'max', found {value[:40]!r}")
        return None
    return int(value)


def read_cgroup_limit(fs: RootFS) -> tuple[int, int | None] | None:
    """The tightest cgroup memory limit and that cgroup's usage; None when unlimited."""
    found: list[tuple[int, int | None]] = []
    for folder in _cgroup_v2_dirs(fs):
        limit = _read_int(fs, f"{folder.rstrip('/')}/memory.max")
        if limit is not None:
            found.append((limit, _read_int(fs, f"{folder.rstrip('/')}/memory.current")))
    v1 = _read_int(fs, "sys/fs/cgroup/memory/memory.limit_in_bytes")
    if v1 is not None and v1 < _V1_UNLIMITED:
        found.append((v1, _read_int(fs, "sys/fs/cgroup/memory/memory.usage_in_bytes")))
    return min(found, key=lambda item: item[0]) if found else None


def _psutil_memory() -> tuple[int, int]:
    import psutil

    mem = psutil.virtual_memory()
    return int(mem.total), int(mem.available)


def read_memory(fs: RootFS, *, live: bool) -> MemoryInfo:
    """Total and available memory; the cgroup limit wins when it is smaller."""
    text = fs.read_text("proc/meminfo")
    info = parse_meminfo(text) if text is not None else {}
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    if available is None and "MemFree" in info:
        available = info["MemFree"] + info.get("Buffers", 0) + info.get("Cached", 0)
        fs.warn("proc/meminfo: no MemAvailable; estimated as MemFree + Buffers + Cached")
    if total is None and live:
        total, available = _psutil_memory()
    elif total is None:
        found = "no MemTotal line" if text is not None or fs.exists("proc/meminfo") else "missing"
        fs.warn(f"proc/meminfo: {found}; memory unknown")
    limit = read_cgroup_limit(fs)
    if limit is not None:
        cap, used = limit
        total = cap if total is None else min(total, cap)
        headroom = cap if used is None else max(cap - used, 0)
        available = headroom if available is None else min(available, headroom)
    return MemoryInfo(total_bytes=total, available_bytes=available)
