"""Jetson details: release parsing, the JetPack table and synthetic device trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwprobe.jetson import jetpack_for, parse_tegra_release
from tests.hwprobe.roots import MEMINFO_16G, check_probe, probe_files


def test_parse_tegra_release_variants() -> None:
    """REVISION x.y becomes major.x.y; a missing patch is .0; junk is None."""
    assert parse_tegra_release("# R35 (release), REVISION: 3.1, GCID: 1") == "35.3.1"
    assert parse_tegra_release("# R36 (release), REVISION: 4, GCID: 1") == "36.4.0"
    assert parse_tegra_release("not a release file") is None


def test_jetpack_table() -> None:
    """Known L4T releases map to their JetPack; an unknown one is None, not a guess."""
    assert jetpack_for("32.7.1") == "4.6.1"
    assert jetpack_for("35.3.1") == "5.1.1"
    assert jetpack_for("35.4.1") == "5.1.2"
    assert jetpack_for("35.5.0") == "5.1.3"
    assert jetpack_for("36.3.0") == "6.0"
    assert jetpack_for("36.4.0") == "6.1"
    assert jetpack_for("36.4.3") == "6.2"
    assert jetpack_for("36.9.9") is None
    assert jetpack_for(None) is None


def test_orin_r36_release_alone(fake_root: Path) -> None:
    """Synthetic: only an R36 nv_tegra_release; JetPack 6 runs on Orin only, so tegra234."""
    release = (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n"
    )
    files = {"etc/nv_tegra_release": release, "proc/meminfo": MEMINFO_16G}
    profile = probe_files(fake_root, files)
    assert profile.jetson is not None
    assert (profile.jetson.soc, profile.jetson.l4t, profile.jetson.jetpack) == (
        "tegra234",
        "36.4.3",
        "6.2",
    )
    assert profile.accelerators[0].kind == "nvidia-jetson"
    assert profile.accelerators[0].memory_bytes == 16384000 * 1024  # shared with the CPU


@pytest.mark.parametrize(
    ("files", "expected", "warning"),
    [
        pytest.param(
            {
                "proc/device-tree/model": "Jetson AGX Orin Developer Kit\0",
                "proc/device-tree/compatible": (
                    "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0"
                ),
            },
            {
                "jetson.model": "Jetson AGX Orin Developer Kit",
                "jetson.soc": "tegra234",
                "board.vendor": "nvidia",
            },
            None,
            id="an Orin AGX device tree: the SoC from 'nvidia,tegra234', the model kept",
        ),
        pytest.param(
            {"proc/device-tree/model": "quill\0"},
            {"jetson.model": "Jetson TX2", "jetson.soc": "tegra186"},
            None,
            id="the TX2 developer kit's model string is just 'quill'",
        ),
        pytest.param(
            {"etc/nv_tegra_release": "# R40 (release), REVISION: 1.0, GCID: 1\n"},
            {"jetson.l4t": "40.1.0", "jetson.jetpack": None},
            "JetPack table",
            id="a release newer than the table keeps L4T and warns about JetPack",
        ),
    ],
)
def test_jetson_identity(
    fake_root: Path, files: dict[str, str], expected: dict[str, object], warning: str | None
) -> None:
    """Synthetic device trees and release files."""
    assert check_probe(fake_root, files, expected, warning).jetson is not None


def test_plain_arm_board_is_not_a_jetson(fake_root: Path) -> None:
    """Synthetic: a Rockchip board with an NVIDIA-free device tree."""
    files = {
        "proc/device-tree/model": "Radxa ROCK 5B\0",
        "proc/device-tree/compatible": "radxa,rock-5b\0rockchip,rk3588\0",
    }
    profile = probe_files(fake_root, files)
    assert profile.jetson is None
    assert profile.device_class == "cpu-arm"
    assert (profile.board.vendor, profile.board.model) == ("radxa", "Radxa ROCK 5B")
