"""GPUs and NPUs from sysfs. No public sysfs sample exists, so every tree here is synthetic,
built from the documented layout (vendor/device/class files, driver symlinks, uevent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwprobe import probe
from tests.hwprobe.roots import MEMINFO_16G, X86_CPUINFO, symlink, warned, write_file


def pci_device(
    root: Path, folder: str, vendor: int, device: int, pci_class: int, driver: str | None
) -> None:
    """Write vendor/device/class files and a dangling driver symlink, as sysfs has them."""
    write_file(root, f"{folder}/vendor", f"0x{vendor:04x}\n")
    write_file(root, f"{folder}/device", f"0x{device:04x}\n")
    write_file(root, f"{folder}/class", f"0x{pci_class:06x}\n")
    if driver is not None:
        symlink(root, f"{folder}/driver", f"../../../bus/pci/drivers/{driver}")


def x86_machine(root: Path) -> None:
    """An x86 CPU and 16 GB of memory."""
    write_file(root, "proc/cpuinfo", X86_CPUINFO)
    write_file(root, "proc/meminfo", MEMINFO_16G)


def test_intel_igpu_via_drm_card(fake_root: Path) -> None:
    """Synthetic: only /sys/class/drm/card0/device with i915 named in uevent."""
    x86_machine(fake_root)
    write_file(fake_root, "sys/class/drm/card0/device/vendor", "0x8086\n")
    write_file(fake_root, "sys/class/drm/card0/device/device", "0x7d55\n")
    write_file(
        fake_root, "sys/class/drm/card0/device/uevent", "DRIVER=i915\nPCI_SLOT_NAME=0000:00:02.0\n"
    )
    write_file(fake_root, "sys/class/drm/card0-eDP-1/status", "connected\n")
    profile = probe(fake_root)
    assert [a.kind for a in profile.accelerators] == ["intel-igpu"]
    igpu = profile.accelerators[0]
    assert (igpu.driver, igpu.pci_address) == ("i915", "0000:00:02.0")
    assert igpu.memory_bytes == profile.memory.total_bytes  # shared memory
    assert profile.device_class == "intel-igpu"
    assert profile.engines[0] == "openvino"


def test_pci_and_drm_views_of_one_gpu_count_once(fake_root: Path) -> None:
    """Synthetic: card0/device links to the PCI folder, as on a real system; one GPU results."""
    x86_machine(fake_root)
    pci_device(fake_root, "sys/bus/pci/devices/0000:00:02.0", 0x8086, 0x46A6, 0x030000, "xe")
    pci_device(fake_root, "sys/bus/pci/devices/0000:00:00.0", 0x8086, 0x4621, 0x060000, None)
    symlink(fake_root, "sys/class/drm/card1/device", "../../../bus/pci/devices/0000:00:02.0")
    profile = probe(fake_root)
    assert [(a.kind, a.driver) for a in profile.accelerators] == [("intel-igpu", "xe")]


def test_intel_npu(fake_root: Path) -> None:
    """Synthetic: /dev/accel/accel0 with sysfs driver intel_vpu (Meteor Lake NPU, 0x7d1d)."""
    x86_machine(fake_root)
    write_file(fake_root, "sys/class/accel/accel0/device/vendor", "0x8086\n")
    write_file(fake_root, "sys/class/accel/accel0/device/device", "0x7d1d\n")
    symlink(fake_root, "sys/class/accel/accel0/device/driver", "../../../bus/pci/drivers/intel_vpu")
    write_file(fake_root, "dev/accel/accel0", b"")
    profile = probe(fake_root)
    assert [(a.kind, a.name) for a in profile.accelerators] == [
        ("intel-npu", "Intel NPU (Meteor Lake)")
    ]
    assert profile.device_class == "intel-npu"
    assert profile.engines[0] == "openvino"


def test_npu_without_device_node_is_not_usable(fake_root: Path) -> None:
    """Synthetic: sysfs knows the NPU but /dev/accel/accel0 is missing (e.g. a container)."""
    x86_machine(fake_root)
    write_file(fake_root, "sys/class/accel/accel0/device/uevent", "DRIVER=intel_vpu\n")
    profile = probe(fake_root)
    assert profile.accelerators == []
    assert profile.device_class == "cpu-x86"
    assert warned(profile, "dev/accel/accel0")


def test_igpu_and_npu_together_prefer_the_gpu_class(fake_root: Path) -> None:
    """Synthetic: a Meteor Lake laptop has both; the class is intel-igpu."""
    x86_machine(fake_root)
    pci_device(fake_root, "sys/bus/pci/devices/0000:00:02.0", 0x8086, 0x7D55, 0x030000, "i915")
    write_file(fake_root, "sys/class/accel/accel0/device/uevent", "DRIVER=intel_vpu\n")
    write_file(fake_root, "dev/accel/accel0", b"")
    profile = probe(fake_root)
    assert sorted(a.kind for a in profile.accelerators) == ["intel-igpu", "intel-npu"]
    assert profile.device_class == "intel-igpu"


def test_discrete_nvidia_gpu(fake_root: Path) -> None:
    """Synthetic: a 3D-controller-class NVIDIA device named by the driver's proc file."""
    x86_machine(fake_root)
    pci_device(fake_root, "sys/bus/pci/devices/0000:01:00.0", 0x10DE, 0x2330, 0x030200, "nvidia")
    write_file(
        fake_root,
        "proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 42\n",
    )
    profile = probe(fake_root)
    assert [(a.kind, a.name) for a in profile.accelerators] == [
        ("nvidia-gpu", "NVIDIA H100 80GB HBM3")
    ]
    assert profile.device_class == "nvidia-gpu"
    assert profile.engines[0] == "tensorrt"
    assert profile.runtime is None


def test_amd_gpu_is_neither_intel_nor_nvidia(fake_root: Path) -> None:
    """Synthetic: an amdgpu card is listed as amd-gpu and the class stays cpu-x86."""
    x86_machine(fake_root)
    folder = "sys/bus/pci/devices/0000:03:00.0"
    pci_device(fake_root, folder, 0x1002, 0x744C, 0x030000, "amdgpu")
    write_file(fake_root, f"{folder}/mem_info_vram_total", f"{24 << 30}\n")
    profile = probe(fake_root)
    assert [a.kind for a in profile.accelerators] == ["amd-gpu"]
    assert profile.accelerators[0].memory_bytes == 24 << 30
    assert profile.device_class == "cpu-x86"
    assert profile.engines[0] == "llamacpp"


PCI = "sys/bus/pci/devices"


@pytest.mark.parametrize(
    ("devices", "found", "device_class", "warning"),
    [
        pytest.param(
            [("0000:03:00.0", 0x8086, 0x56A0, 0x030000, "i915")],
            [("intel-dgpu", "i915", None)],
            "intel-igpu",
            None,
            id="Arc A770 (0x56a0) is an intel-dgpu (memory unknown); the class is intel-igpu",
        ),
        pytest.param(
            [("0000:00:02.0", 0x8086, 0x9B41, 0x030000, None)],
            [("intel-igpu", None, 16384000 * 1024)],
            "intel-igpu",
            "no i915/xe driver",
            id="an Intel GPU with no i915/xe driver bound is listed with a warning",
        ),
        pytest.param(
            [
                ("0000:02:00.0", 0x1A03, 0x2000, 0x030000, "ast"),
                ("0000:00:00.0", 0x8086, 0x0D57, 0x060000, None),
            ],
            [],
            "cpu-x86",
            None,
            id="an ASPEED BMC VGA and an Intel host bridge are not accelerators",
        ),
    ],
)
def test_pci_devices(
    fake_root: Path,
    devices: list[tuple[str, int, int, int, str | None]],
    found: list[tuple[str, str | None, int | None]],
    device_class: str,
    warning: str | None,
) -> None:
    """Synthetic: PCI devices on an x86 machine."""
    x86_machine(fake_root)
    for address, vendor, device, pci_class, driver in devices:
        pci_device(fake_root, f"{PCI}/{address}", vendor, device, pci_class, driver)
    profile = probe(fake_root)
    assert [(a.kind, a.driver, a.memory_bytes) for a in profile.accelerators] == found
    assert profile.device_class == device_class
    assert warning is None or warned(profile, warning)
