"""GPUs and NPUs from sysfs: PCI display devices, DRM cards and accel (NPU) nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hwprobe.profile import Accelerator, AcceleratorKind
from hwprobe.rootfs import RootFS

NVIDIA, INTEL, AMD = 0x10DE, 0x8086, 0x1002
_DISPLAY_CLASS = 0x03  # PCI base class "display controller" (VGA, 3D, other)
_INTEL_GPU_DRIVERS = ("i915", "xe")
_CARD = re.compile(r"card\d+$")
_ACCEL = re.compile(r"accel\d+$")
_NPU_NAMES = {
    0x7D1D: "Intel NPU (Meteor Lake)",
    0xAD1D: "Intel NPU (Arrow Lake)",
    0x643E: "Intel NPU (Lunar Lake)",
    0xB03E: "Intel NPU (Panther Lake)",
}


@dataclass
class PciDisplay:
    """One display-class PCI device as sysfs describes it."""

    address: str | None
    vendor: int
    device: int | None
    driver: str | None
    folder: str


def is_intel_discrete(device_id: int | None) -> bool:
    """Intel discrete GPUs: DG1 (0x4905-0x4909), Arc Alchemist (0x56xx), Battlemage (0xe2xx)."""
    if device_id is None:
        return False
    return 0x4905 <= device_id <= 0x4909 or device_id >> 8 in (0x56, 0xE2)


def _driver(fs: RootFS, folder: str) -> str | None:
    linked = fs.link_name(f"{folder}/driver")
    if linked:
        return linked
    for line in (fs.read_text(f"{folder}/uevent") or "").splitlines():
        if line.startswith("DRIVER="):
            return line.partition("=")[2].strip() or None
    return None


def _address(fs: RootFS, folder: str) -> str | None:
    linked = fs.link_name(folder)
    if linked and linked.count(":") == 2:
        return linked
    for line in (fs.read_text(f"{folder}/uevent") or "").splitlines():
        if line.startswith("PCI_SLOT_NAME="):
            return line.partition("=")[2].strip() or None
    return None


def _display(fs: RootFS, folder: str, *, class_required: bool) -> PciDisplay | None:
    vendor = fs.read_hex(f"{folder}/vendor")
    if vendor is None:
        return None
    pci_class = fs.read_hex(f"{folder}/class")
    if pci_class is None and class_required:
        return None
    if pci_class is not None and pci_class >> 16 != _DISPLAY_CLASS:
        return None
    return PciDisplay(
        address=_address(fs, folder),
        vendor=vendor,
        device=fs.read_hex(f"{folder}/device"),
        driver=_driver(fs, folder),
        folder=folder,
    )


def find_displays(fs: RootFS) -> list[PciDisplay]:
    """Display devices from /sys/bus/pci/devices and /sys/class/drm/card*/device, deduplicated."""
    found: dict[str, PciDisplay] = {}
    for name in fs.list_dir("sys/bus/pci/devices"):
        display = _display(fs, f"sys/bus/pci/devices/{name}", class_required=True)
        if display is not None:
            display.address = display.address or name
            found[display.address] = display
    for card in filter(_CARD.match, fs.list_dir("sys/class/drm")):
        display = _display(fs, f"sys/class/drm/{card}/device", class_required=False)
        if display is not None:
            key = display.address or f"drm:{card}"
            found.setdefault(key, display)
    return list(found.values())


def _nvidia_name(fs: RootFS, display: PciDisplay) -> str:
    if display.address:
        text = fs.read_text(f"proc/driver/nvidia/gpus/{display.address}/information") or ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model" and value.strip():
                return value.strip()
    return f"NVIDIA GPU ({_hex(display.device)})"


def _hex(value: int | None) -> str:
    return "unknown id" if value is None else f"0x{value:04x}"


def _gpu(
    kind: AcceleratorKind, name: str, display: PciDisplay, memory: int | None = None
) -> Accelerator:
    return Accelerator(
        kind=kind,
        name=name,
        memory_bytes=memory,
        driver=display.driver,
        pci_address=display.address,
    )


def _classify(fs: RootFS, display: PciDisplay, shared_bytes: int | None) -> Accelerator | None:
    if display.vendor == NVIDIA:
        return _gpu("nvidia-gpu", _nvidia_name(fs, display), display)
    if display.vendor == AMD:
        vram = fs.read_value(f"{display.folder}/mem_info_vram_total")
        memory = int(vram) if vram and vram.isdigit() else None
        return _gpu("amd-gpu", f"AMD GPU ({_hex(display.device)})", display, memory)
    if display.vendor == INTEL:
        if display.driver not in _INTEL_GPU_DRIVERS:
            fs.warn(
                f"Intel GPU {_hex(display.device)} has no i915/xe driver bound "
                f"({display.driver or 'none'}): OpenVINO cannot use it until one is loaded"
            )
        if is_intel_discrete(display.device):
            return _gpu("intel-dgpu", f"Intel Arc GPU ({_hex(display.device)})", display)
        name = f"Intel integrated GPU ({_hex(display.device)})"
        return _gpu("intel-igpu", name, display, shared_bytes)
    # BMC and virtual display adapters (ASPEED, QEMU, virtio...) cannot run inference.
    return None


def find_npus(fs: RootFS) -> list[Accelerator]:
    """Accel nodes (/dev/accel/accelN) whose sysfs driver we know; Intel's is intel_vpu."""
    found: list[Accelerator] = []
    for node in filter(_ACCEL.match, fs.list_dir("sys/class/accel")):
        folder = f"sys/class/accel/{node}/device"
        driver = _driver(fs, folder)
        if not fs.exists(f"dev/accel/{node}"):
            fs.warn(f"{folder} exists but dev/accel/{node} does not: accelerator not usable here")
            continue
        device = fs.read_hex(f"{folder}/device")
        address = _address(fs, folder)
        if driver == "intel_vpu":
            name = _NPU_NAMES.get(device or -1, f"Intel NPU ({_hex(device)})")
            found.append(
                Accelerator(kind="intel-npu", name=name, driver=driver, pci_address=address)
            )
        else:
            found.append(
                Accelerator(
                    kind="other", name=f"accelerator {node}", driver=driver, pci_address=address
                )
            )
    return found


def read_accelerators(fs: RootFS, shared_bytes: int | None) -> list[Accelerator]:
    """PCI GPUs and accel NPUs; integrated GPUs report ``shared_bytes`` as their memory."""
    gpus = [_classify(fs, display, shared_bytes) for display in find_displays(fs)]
    return [gpu for gpu in gpus if gpu is not None] + find_npus(fs)
