"""Parse /proc/cpuinfo text into plain facts (no filesystem access here)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Flags that matter for choosing an inference engine or a kernel; the rest are noise.
X86_FEATURES = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512cd",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx512vbmi",
        "avx_vnni",
        "avx_vnni_int8",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "amx_fp16",
    }
)
ARM64_FEATURES = frozenset(
    {
        "fp",
        "asimd",
        "asimdhp",
        "asimddp",
        "asimdfhm",
        "fphp",
        "i8mm",
        "bf16",
        "sve",
        "sve2",
        "sme",
        "sme2",
        "atomics",
    }
)
ARM32_FEATURES = frozenset({"neon", "vfpv3", "vfpv4", "vfpd32", "idiva"})
# Hardware capabilities only an AArch64 kernel reports (a 32-bit view shows vfp/neon instead).
_AARCH64_ONLY = frozenset({"asimd", "fp", "cpuid", "atomics"})
_AARCH32_ONLY = frozenset({"vfp", "neon", "half", "thumb", "vfpv3", "vfpv4", "edsp"})

# (implementer, part) -> core name, from the Linux arm64 cputype.h table.
ARM_CORES: dict[tuple[int, int], str] = {
    (0x41, 0xB76): "ARM1176",
    (0x41, 0xC07): "Cortex-A7",
    (0x41, 0xC08): "Cortex-A8",
    (0x41, 0xC09): "Cortex-A9",
    (0x41, 0xC0F): "Cortex-A15",
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE",
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD83): "Neoverse-V3AE",
    (0x41, 0xD84): "Neoverse-V3",
    (0x4E, 0x003): "NVIDIA Denver 2",
    (0x4E, 0x004): "NVIDIA Carmel",
}
# Cores that are 64-bit capable even when a 32-bit kernel reports "CPU architecture: 7".
_ARMV8_PARTS = frozenset(key for key in ARM_CORES if key[0] == 0x4E or key[1] >= 0xD00)


@dataclass
class CpuFacts:
    """Facts parsed from one cpuinfo text."""

    arch: str | None = None
    model: str | None = None
    cores: int | None = None
    features: list[str] = field(default_factory=list)
    core_names: list[str] = field(default_factory=list)
    board_model: str | None = None
    notes: list[str] = field(default_factory=list)


def _blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def _common_features(processors: list[dict[str, str]], key: str) -> set[str]:
    """Flags every processor has (hybrid chips can differ; only the shared ones are safe)."""
    sets = [set(p[key].lower().split()) for p in processors if key in p]
    return set.intersection(*sets) if sets else set()


def parse_cpuinfo(text: str) -> CpuFacts:
    """Parse the text of /proc/cpuinfo; unknown parts stay None."""
    blocks = _blocks(text)
    processors = [b for b in blocks if _int(b.get("processor")) is not None]
    merged: dict[str, str] = {}
    for block in blocks:
        for key, value in block.items():
            merged.setdefault(key, value)
    facts = CpuFacts(cores=len(processors) or None, board_model=merged.get("Model") or None)
    if any("flags" in p for p in processors):
        _parse_x86(facts, processors)
    elif any(k in merged for k in ("Features", "CPU implementer", "CPU architecture")):
        _parse_arm(facts, processors or [merged], merged)
    return facts


def _parse_x86(facts: CpuFacts, processors: list[dict[str, str]]) -> None:
    flags = _common_features(processors, "flags")
    facts.arch = "x86_64" if "lm" in flags else "i686"
    facts.features = sorted(flags & X86_FEATURES)
    facts.model = next((p["model name"] for p in processors if p.get("model name")), None)


def _parse_arm(facts: CpuFacts, processors: list[dict[str, str]], merged: dict[str, str]) -> None:
    flags = _common_features(processors, "Features")
    parts = [(_int(p.get("CPU implementer")), _int(p.get("CPU part"))) for p in processors]
    known = [(i, p) for i, p in parts if i is not None and p is not None]
    names = [ARM_CORES[key] for key in known if key in ARM_CORES]
    facts.core_names = [name for name, _ in Counter(names).most_common()]
    version = merged.get("CPU architecture", "").strip().lower()
    v8_capable = version in ("8", "aarch64") or any(key in _ARMV8_PARTS for key in known)
    if flags & _AARCH64_ONLY:
        facts.arch = "aarch64"
        facts.features = sorted(flags & ARM64_FEATURES | ({"neon"} if "asimd" in flags else set()))
    elif flags & _AARCH32_ONLY or version in ("7", "6"):
        # ARM1176 (Pi 1 / Zero) says "CPU architecture: 7" but is ARMv6.
        v6 = version == "6" or (0x41, 0xB76) in known or "(v6l)" in merged.get("model name", "")
        facts.arch = "armv6l" if v6 else "armv7l"
        facts.features = sorted(flags & ARM32_FEATURES)
        if v8_capable:
            facts.notes.append(
                "CPU is 64-bit capable (ARMv8) but reports 32-bit features: "
                "a 32-bit kernel or userland, treated as armv7l; a 64-bit OS runs faster engines"
            )
    elif v8_capable:
        facts.arch = "aarch64"
    if facts.core_names:
        facts.model = " + ".join(facts.core_names)
    else:
        facts.model = merged.get("model name") or merged.get("Processor") or None
