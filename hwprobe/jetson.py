"""NVIDIA Jetson detection: device tree, /etc/nv_tegra_release and NVIDIA-designed CPU cores."""

from __future__ import annotations

import re

from hwprobe.board import DeviceTree
from hwprobe.profile import JetsonInfo
from hwprobe.rootfs import RootFS

# L4T release -> JetPack release, from NVIDIA's JetPack archive. Releases not listed give
# null rather than a nearby guess.
L4T_TO_JETPACK: dict[str, str] = {
    "32.1.0": "4.2",
    "32.2.0": "4.2.1",
    "32.2.1": "4.2.2",
    "32.2.3": "4.2.3",
    "32.3.1": "4.3",
    "32.4.2": "4.4 DP",
    "32.4.3": "4.4",
    "32.4.4": "4.4.1",
    "32.5.0": "4.5",
    "32.5.1": "4.5.1",
    "32.5.2": "4.5.1",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "34.1.0": "5.0 DP",
    "34.1.1": "5.0.1 DP",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}
# L4T majors that support exactly one SoC (R32 and R35 each cover several, so they say nothing).
_SOC_BY_L4T_MAJOR = {"36": "tegra234", "38": "tegra264"}
# Model-string words -> SoC; checked in order, so "orin nano" hits orin before nano.
_SOC_BY_MODEL_WORD = (
    ("thor", "tegra264"),
    ("orin", "tegra234"),
    ("xavier", "tegra194"),
    ("tx2", "tegra186"),
    ("quill", "tegra186"),
    ("tx1", "tegra210"),
    ("nano", "tegra210"),
)
# Device-tree codenames that are Jetson boards without saying so.
_CODENAMES = {"quill": "Jetson TX2"}
# CPU cores NVIDIA designed only for these Tegra SoCs.
_SOC_BY_CORE = {"NVIDIA Denver 2": "tegra186", "NVIDIA Carmel": "tegra194"}
_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?")
_TEGRA = re.compile(r"nvidia,(tegra\d+)$")


def parse_tegra_release(text: str) -> str | None:
    """'# R35 (release), REVISION: 3.1, ...' -> '35.3.1'; None when the line is not there."""
    match = _RELEASE.search(text)
    if match is None:
        return None
    major, minor, patch = match.group(1), match.group(2), match.group(3) or "0"
    return f"{major}.{minor}.{patch}"


def jetpack_for(l4t: str | None) -> str | None:
    """JetPack release for an L4T release, or None when the table does not know it."""
    return L4T_TO_JETPACK.get(l4t) if l4t else None


def _soc_from_model(model: str) -> str | None:
    lowered = model.lower()
    return next((soc for word, soc in _SOC_BY_MODEL_WORD if word in lowered), None)


def _is_jetson_model(model: str) -> bool:
    lowered = model.lower()
    if "jetson" in lowered or lowered in _CODENAMES:
        return True
    return lowered.startswith("nvidia ") and _soc_from_model(model) is not None


def read_jetson(fs: RootFS, tree: DeviceTree, core_names: list[str]) -> JetsonInfo | None:
    """A JetsonInfo when any evidence says Tegra; None on every other board."""
    tegra = [m.group(1) for c in tree.compatible if (m := _TEGRA.match(c))]
    model = tree.model if tree.model and (tegra or _is_jetson_model(tree.model)) else None
    release_text = fs.read_text("etc/nv_tegra_release")
    l4t = parse_tegra_release(release_text) if release_text is not None else None
    if release_text is not None and l4t is None:
        fs.warn("etc/nv_tegra_release: no '# R<major> (release), REVISION: x.y' line found")
    core_soc = next((_SOC_BY_CORE[n] for n in core_names if n in _SOC_BY_CORE), None)
    if not (tegra or model or l4t or core_soc):
        return None
    soc = (
        (tegra[0] if tegra else None)
        or (_soc_from_model(model) if model else None)
        or (_SOC_BY_L4T_MAJOR.get(l4t.split(".")[0]) if l4t else None)
        or core_soc
    )
    if model is None and not tegra and not l4t and core_soc:
        fs.warn(f"Jetson inferred from NVIDIA CPU cores ({soc}); board model and L4T unknown")
    jetpack = jetpack_for(l4t)
    if l4t and jetpack is None:
        fs.warn(f"L4T {l4t} is not in hwprobe's JetPack table; jetpack left null")
    friendly = _CODENAMES.get(model.lower(), model) if model else None
    return JetsonInfo(model=friendly, soc=soc, l4t=l4t, jetpack=jetpack)
