"""Every real hardware sample in tests/fixtures/hw (see SOURCES.md there) classifies right."""

from __future__ import annotations

from hwprobe import probe
from tests.hwprobe.roots import SAMPLES


def test_jetson_nano_has_model_soc_l4t_and_jetpack() -> None:
    """Jetson Nano: device-tree model, R32.7.6 release file and 4x Cortex-A57 cpuinfo."""
    profile = probe(SAMPLES / "jetson-nano")
    assert profile.device_class == "jetson"
    assert profile.jetson is not None
    assert profile.jetson.model == "NVIDIA Jetson Nano Developer Kit"
    assert (profile.jetson.soc, profile.jetson.l4t, profile.jetson.jetpack) == (
        "tegra210",
        "32.7.6",
        "4.6.6",
    )
    assert profile.cpu.arch == "aarch64"
    assert profile.cpu.model == "Cortex-A57"
    assert profile.cpu.cores == 4
    assert {"asimd", "neon"} <= set(profile.cpu.features)
    assert profile.board.vendor == "nvidia"
    assert profile.accelerators[0].kind == "nvidia-jetson"
    assert profile.engines[0] == "tensorrt"
    assert profile.runtime is None


def test_xavier_is_recognised_from_carmel_cores_alone() -> None:
    """AGX Xavier sample has only cpuinfo: NVIDIA Carmel cores exist only in tegra194."""
    profile = probe(SAMPLES / "jetson-agx-xavier")
    assert profile.device_class == "jetson"
    assert profile.jetson is not None
    assert profile.jetson.soc == "tegra194"
    assert profile.jetson.model is None
    assert profile.jetson.l4t is None
    assert profile.cpu.model == "NVIDIA Carmel"
    assert profile.cpu.cores == 8
    assert any("NVIDIA CPU cores" in w for w in profile.warnings)


def test_orin_nano_model_without_the_word_jetson() -> None:
    """'NVIDIA Orin Nano Developer Kit' is a Jetson Orin (tegra234), not a Jetson Nano."""
    profile = probe(SAMPLES / "jetson-orin-nano-jp5")
    assert profile.device_class == "jetson"
    assert profile.jetson is not None
    assert profile.jetson.model == "NVIDIA Orin Nano Developer Kit"
    assert profile.jetson.soc == "tegra234"
    assert profile.cpu.arch is None
    assert any("proc/cpuinfo" in w for w in profile.warnings)


def test_release_file_alone_is_a_jetson_of_unknown_board() -> None:
    """Only nv_tegra_release R35.2.1: R35 runs on Xavier and Orin, so the SoC stays null."""
    profile = probe(SAMPLES / "jetson-unknown-board-r35.2.1")
    assert profile.device_class == "jetson"
    assert profile.jetson is not None
    assert profile.jetson.model is None
    assert profile.jetson.soc is None
    assert profile.jetson.l4t == "35.2.1"
    assert profile.jetson.jetpack == "5.1"
    assert profile.board.model is None  # BOARD: t186ref is not trusted


def test_raspberry_pi_5() -> None:
    """Pi 5: compatible raspberrypi,5-model-b; cpuinfo's 'Hardware: BCM2835' is ignored."""
    profile = probe(SAMPLES / "raspberry-pi-5")
    assert profile.device_class == "cpu-arm"
    assert profile.jetson is None
    assert profile.board.vendor == "raspberrypi"
    assert profile.board.model == "Raspberry Pi 5 Model B Rev 1.0"
    assert profile.cpu.arch == "aarch64"
    assert profile.cpu.model == "Cortex-A76"
    assert "asimddp" in profile.cpu.features
    assert profile.engines[0] == "llamacpp"
    assert profile.accelerators == []


def test_intel_i7_8650u_avx2_and_meminfo_fallback() -> None:
    """Kaby Lake-R: avx2 without avx512; meminfo lacks MemAvailable (fallback estimate)."""
    profile = probe(SAMPLES / "intel-i7-8650u")
    assert profile.device_class == "cpu-x86"
    assert profile.cpu.arch == "x86_64"
    assert profile.cpu.model == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    assert profile.cpu.cores == 8
    assert "avx2" in profile.cpu.features
    assert not any(f.startswith("avx512") for f in profile.cpu.features)
    assert profile.memory.total_bytes == 15666184 * 1024
    assert profile.memory.available_bytes == (440324 + 1020128 + 12007640) * 1024
    assert any("MemAvailable" in w for w in profile.warnings)
    assert profile.engines == ["llamacpp", "openvino", "onnxruntime"]
