"""parse_cpuinfo on synthetic cpuinfo texts for cases no public sample covers."""

from __future__ import annotations

from hwprobe.cpuinfo import parse_cpuinfo

PI3_32BIT_KERNEL = """processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 3 Model B Plus Rev 1.3
"""

PI_ZERO = """processor\t: 0
model name\t: ARMv6-compatible processor rev 7 (v6l)
Features\t: half thumb fastmult vfp edsp java tls
CPU implementer\t: 0x41
CPU architecture: 7
CPU part\t: 0xb76
"""


def test_spaces_instead_of_tabs_and_no_model_name() -> None:
    """Separators may be spaces; a missing 'model name' leaves the model null."""
    facts = parse_cpuinfo(
        "processor : 0\nflags : fpu lm avx2 AVX512F\n\nprocessor : 1\nflags : fpu lm avx2 avx512f\n"
    )
    assert facts.arch == "x86_64"
    assert facts.cores == 2
    assert facts.model is None
    assert facts.features == ["avx2", "avx512f"]


def test_x86_vnni_and_amx_features_are_kept_and_noise_dropped() -> None:
    """Inference flags survive normalisation; unrelated flags like 'fpu' do not."""
    facts = parse_cpuinfo(
        "processor\t: 0\nflags\t\t: fpu lm avx512_vnni avx_vnni amx_int8 amx_tile pni\n"
    )
    assert facts.features == ["amx_int8", "amx_tile", "avx512_vnni", "avx_vnni"]


def test_hybrid_cores_report_only_shared_flags() -> None:
    """A flag missing on one processor is not reported (it is unsafe to use)."""
    facts = parse_cpuinfo(
        "processor\t: 0\nflags\t: lm avx2 avx512f\n\nprocessor\t: 1\nflags\t: lm avx2\n"
    )
    assert facts.features == ["avx2"]


def test_32bit_x86_without_lm() -> None:
    """No 'lm' (long mode) flag: a 32-bit x86 CPU."""
    assert parse_cpuinfo("processor\t: 0\nflags\t: fpu sse4_2\n").arch == "i686"


def test_32bit_kernel_on_64bit_pi3_is_armv7_with_a_warning() -> None:
    """A Cortex-A53 under a 32-bit kernel reports arch 7: the software is 32-bit (armv7l)."""
    facts = parse_cpuinfo(PI3_32BIT_KERNEL)
    assert facts.arch == "armv7l"
    assert facts.model == "Cortex-A53"
    assert facts.board_model == "Raspberry Pi 3 Model B Plus Rev 1.3"
    assert "neon" in facts.features
    assert any("64-bit capable" in note for note in facts.notes)


def test_64bit_kernel_seen_from_32bit_userland_is_armv7() -> None:
    """'CPU architecture: 8' with only 32-bit hwcaps (compat view) is treated as armv7l."""
    text = PI3_32BIT_KERNEL.replace("CPU architecture: 7", "CPU architecture: 8")
    facts = parse_cpuinfo(text)
    assert facts.arch == "armv7l"
    assert facts.notes


def test_pi_zero_is_armv6_despite_architecture_7() -> None:
    """The ARM1176 reports 'CPU architecture: 7' but runs ARMv6 code."""
    facts = parse_cpuinfo(PI_ZERO)
    assert facts.arch == "armv6l"
    assert facts.model == "ARM1176"
    assert facts.notes == []


def test_orin_cortex_a78ae_with_i8mm() -> None:
    """Synthetic Orin cpuinfo (no public full sample): Cortex-A78AE, dot product, no sve."""
    block = (
        "processor\t: {n}\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp "
        "cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd42\n\n"
    )
    facts = parse_cpuinfo("".join(block.format(n=n) for n in range(6)))
    assert facts.arch == "aarch64"
    assert facts.model == "Cortex-A78AE"
    assert facts.cores == 6
    assert "asimddp" in facts.features
    assert "sve" not in facts.features


def test_big_little_names_both_core_types() -> None:
    """RK3588-style 4x A55 + 4x A76 lists both core names."""
    text = "".join(
        f"processor\t: {n}\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU part\t: {'0xd05' if n < 4 else '0xd0b'}\n\n"
        for n in range(8)
    )
    assert parse_cpuinfo(text).model == "Cortex-A55 + Cortex-A76"


def test_unknown_arm_part_falls_back_to_model_name() -> None:
    """An unlisted implementer/part keeps the kernel's 'model name'."""
    text = (
        "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nFeatures\t: fp asimd\n"
        "CPU implementer\t: 0x51\nCPU architecture: 8\nCPU part\t: 0x801\n"
    )
    assert parse_cpuinfo(text).model == "ARMv8 Processor rev 1 (v8l)"


def test_text_without_processors_gives_nothing() -> None:
    """Nonsense text parses to an empty result rather than raising."""
    facts = parse_cpuinfo("hello world\n: : :\n\n\n")
    assert (facts.arch, facts.model, facts.cores, facts.features) == (None, None, None, [])
