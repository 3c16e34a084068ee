"""A device's hardware profile (hwprobe's JSON contract) as rows a person reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GIB = 1024**3


def hardware_rows(profile: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(label, text) rows: CPU, ISA, memory, board, Jetson, accelerators, engines, warnings.

    The profile comes from the device, so every field may be missing or of the wrong type:
    what cannot be read is left out, never an error.
    """
    if not profile:
        return []
    rows: list[tuple[str, str]] = []
    cpu = _dict(profile.get("cpu"))
    if cpu:
        cores = f", {cpu['cores']} cores" if cpu.get("cores") else ""
        rows.append(("CPU", f"{cpu.get('model') or 'unknown'} ({cpu.get('arch') or '?'}{cores})"))
        features = [str(f) for f in cpu.get("features") or [] if isinstance(f, str)]
        if features:
            rows.append(("ISA", ", ".join(features)))
    memory = _dict(profile.get("memory"))
    if isinstance(memory.get("total_bytes"), int):
        text = f"{memory['total_bytes'] / GIB:.1f} GiB"
        if isinstance(memory.get("available_bytes"), int):
            text += f", {memory['available_bytes'] / GIB:.1f} GiB available"
        rows.append(("Memory", text))
    board = _dict(profile.get("board"))
    board_names = [str(v) for v in (board.get("vendor"), board.get("model")) if v]
    if board_names:
        rows.append(("Board", " ".join(board_names)))
    jetson = _dict(profile.get("jetson"))
    if jetson:
        parts = [
            jetson.get("model") or "Jetson",
            jetson.get("soc"),
            jetson.get("l4t") and f"L4T {jetson['l4t']}",
            jetson.get("jetpack") and f"JetPack {jetson['jetpack']}",
        ]
        rows.append(("Jetson", ", ".join(str(p) for p in parts if p)))
    accelerators = [_dict(a) for a in profile.get("accelerators") or []]
    rows.append(("Accelerators", "; ".join(_accelerator(a) for a in accelerators if a) or "none"))
    engines = [str(e) for e in profile.get("engines") or []]
    if engines:
        rows.append(("Engine preference", " > ".join(engines)))
    runtime = _dict(_dict(profile.get("runtime")).get("engines"))
    installed = [_installed(name, _dict(info)) for name, info in runtime.items()]
    if runtime:
        rows.append(("Engines installed", "; ".join(i for i in installed if i) or "none"))
    for warning in profile.get("warnings") or []:
        rows.append(("Warning", str(warning)))
    return rows


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _accelerator(acc: dict[str, Any]) -> str:
    memory = acc.get("memory_bytes")
    size = f" ({memory / GIB:.1f} GiB)" if isinstance(memory, int) and memory else ""
    return f"{acc.get('kind') or 'other'}: {acc.get('name') or 'unnamed'}{size}"


def _installed(name: str, info: dict[str, Any]) -> str:
    if not info.get("installed"):
        return ""
    where = info.get("devices") or info.get("providers") or []
    suffix = f" on {', '.join(str(d) for d in where)}" if where else ""
    return f"{name} {info.get('version') or ''}".rstrip() + suffix
