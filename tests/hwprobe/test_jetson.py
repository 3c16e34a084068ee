"""Jetson details: release parsing, the JetPack table and synthetic device trees."""

from __future__ import annotations

from pathlib import Path

from hwprobe import probe
from hwprobe.jetson import jetpack_for, parse_tegra_release
from tests.hwprobe.roots import MEMINFO_16G, write_file


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
    write_file(
        fake_root,
        "etc/nv_tegra_release",
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n",
    )
    write_file(fake_root, "proc/meminfo", MEMINFO_16G)
    profile = probe(fake_root)
    assert profile.jetson is not None
    assert (profile.jetson.soc, profile.jetson.l4t, profile.jetson.jetpack) == (
        "tegra234",
        "36.4.3",
        "6.2",
    )
    assert profile.accelerators[0].kind == "nvidia-jetson"
    assert profile.accelerators[0].memory_bytes == 16384000 * 1024  # shared with the CPU


def test_compatible_tegra_wins_and_model_is_kept(fake_root: Path) -> None:
    """Synthetic: an Orin AGX device tree; the SoC comes from 'nvidia,tegra234'."""
    write_file(fake_root, "proc/device-tree/model", "Jetson AGX Orin Developer Kit\0")
    write_file(
        fake_root,
        "proc/device-tree/compatible",
        "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0",
    )
    profile = probe(fake_root)
    assert profile.jetson is not None
    assert profile.jetson.model == "Jetson AGX Orin Developer Kit"
    assert profile.jetson.soc == "tegra234"
    assert profile.board.vendor == "nvidia"


def test_quill_codename_is_a_tx2(fake_root: Path) -> None:
    """Synthetic: the TX2 developer kit's model string is just 'quill'."""
    write_file(fake_root, "proc/device-tree/model", "quill\0")
    profile = probe(fake_root)
    assert profile.jetson is not None
    assert profile.jetson.model == "Jetson TX2"
    assert profile.jetson.soc == "tegra186"


def test_unknown_l4t_release_is_kept_without_jetpack(fake_root: Path) -> None:
    """Synthetic: a release newer than the table keeps L4T and warns about JetPack."""
    write_file(fake_root, "etc/nv_tegra_release", "# R40 (release), REVISION: 1.0, GCID: 1\n")
    profile = probe(fake_root)
    assert profile.jetson is not None
    assert profile.jetson.l4t == "40.1.0"
    assert profile.jetson.jetpack is None
    assert any("JetPack table" in w for w in profile.warnings)


def test_plain_arm_board_is_not_a_jetson(fake_root: Path) -> None:
    """Synthetic: a Rockchip board with an NVIDIA-free device tree."""
    write_file(fake_root, "proc/device-tree/model", "Radxa ROCK 5B\0")
    write_file(fake_root, "proc/device-tree/compatible", "radxa,rock-5b\0rockchip,rk3588\0")
    profile = probe(fake_root)
    assert profile.jetson is None
    assert profile.device_class == "cpu-arm"
    assert (profile.board.vendor, profile.board.model) == ("radxa", "Radxa ROCK 5B")
