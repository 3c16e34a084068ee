"""probe(): read a root filesystem (and, live, the runtime libraries) into a HardwareProfile."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hwprobe.accelerators import read_accelerators
from hwprobe.board import board_identity, read_device_tree
from hwprobe.classify import device_class, engines_for
from hwprobe.cpu import cpu_info, read_cpu
from hwprobe.errors import ProbeError
from hwprobe.jetson import read_jetson
from hwprobe.memory import read_memory
from hwprobe.profile import Accelerator, BoardInfo, HardwareProfile
from hwprobe.rootfs import RootFS

_LOGGER = logging.getLogger(__name__)


def is_live_root(root: Path) -> bool:
    """Whether ``root`` is this machine's own ``/``."""
    try:
        return os.path.samefile(root, "/")
    except OSError:
        return False


def probe(root: Path = Path("/"), runtime: bool | None = None) -> HardwareProfile:
    """Probe the hardware under ``root``; import runtime libraries only if ``runtime``."""
    root = Path(root)
    if not root.is_dir():
        raise ProbeError(f"root {root} is not a directory: pass the folder that holds proc/, sys/")
    live = is_live_root(root)
    fs = RootFS(root)
    facts = read_cpu(fs, live=live)
    memory = read_memory(fs, live=live)
    tree = read_device_tree(fs)
    jetson = read_jetson(fs, tree, facts.core_names)
    accelerators = read_accelerators(fs, memory.total_bytes)
    if jetson is not None:
        name = jetson.model or (f"NVIDIA Jetson ({jetson.soc})" if jetson.soc else "NVIDIA Jetson")
        # Jetson GPUs share system memory with the CPU.
        accelerators.insert(
            0, Accelerator(kind="nvidia-jetson", name=name, memory_bytes=memory.total_bytes)
        )
        board = BoardInfo(vendor="nvidia", model=tree.model)
    else:
        vendor, model = board_identity(fs, tree, facts.board_model)
        board = BoardInfo(vendor=vendor, model=model)
    arm_hint = bool(tree.model or tree.compatible)
    klass = device_class(facts.arch, jetson, accelerators, arm_hint=arm_hint)
    if facts.arch is None and klass.startswith("cpu-"):
        fs.warn(f"CPU architecture unknown; device class {klass} is a guess")
    runtime_info = None
    if live if runtime is None else runtime:
        from hwprobe.runtime import probe_runtime

        runtime_info = probe_runtime(fs, accelerators)
    _LOGGER.debug("probed %s: %s with %d warnings", root, klass, len(fs.warnings))
    return HardwareProfile(
        cpu=cpu_info(facts),
        memory=memory,
        board=board,
        jetson=jetson,
        accelerators=accelerators,
        device_class=klass,
        engines=engines_for(klass, facts.arch),
        warnings=fs.warnings,
        runtime=runtime_info,
    )
