"""Board identity from the device tree (ARM boards) or DMI (PCs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hwprobe.rootfs import RootFS

_DT = "proc/device-tree"


@dataclass
class DeviceTree:
    """The two device-tree strings that name a board."""

    model: str | None = None
    compatible: list[str] = field(default_factory=list)


def _strings(text: str) -> list[str]:
    return [s.strip() for s in text.split("\0") if s.strip()]


def read_device_tree(fs: RootFS) -> DeviceTree:
    """Read <root>/proc/device-tree/{model,compatible} (NUL-terminated strings)."""
    model_text = fs.read_text(f"{_DT}/model")
    compatible_text = fs.read_text(f"{_DT}/compatible")
    models = _strings(model_text) if model_text is not None else []
    return DeviceTree(
        model=models[0] if models else None,
        compatible=_strings(compatible_text) if compatible_text is not None else [],
    )


def is_raspberry_pi(tree: DeviceTree, cpu_board_model: str | None) -> bool:
    """Raspberry Pi boards say so in their compatible list or model string."""
    if any(c.startswith("raspberrypi,") for c in tree.compatible):
        return True
    return any((m or "").startswith("Raspberry Pi") for m in (tree.model, cpu_board_model))


def _dmi(fs: RootFS, name: str) -> str | None:
    value = fs.read_value(f"sys/class/dmi/id/{name}")
    # Firmware placeholders say nothing about the board.
    if value is None or value.lower() in (
        "",
        "default string",
        "to be filled by o.e.m.",
        "system product name",
        "system manufacturer",
    ):
        return None
    return value


def board_identity(
    fs: RootFS, tree: DeviceTree, cpu_board_model: str | None
) -> tuple[str | None, str | None]:
    """(vendor, model) from device tree, cpuinfo's Model line, then DMI."""
    if is_raspberry_pi(tree, cpu_board_model):
        return "raspberrypi", tree.model or cpu_board_model
    vendor = tree.compatible[0].partition(",")[0] if tree.compatible else None
    model = tree.model or cpu_board_model
    if vendor is None and model is None:
        vendor, model = _dmi(fs, "sys_vendor"), _dmi(fs, "product_name")
    return vendor, model
