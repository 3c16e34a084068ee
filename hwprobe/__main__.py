"""Command line: ``hwprobe`` prints a summary, ``hwprobe --json`` the profile."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hwprobe.errors import ProbeError
from hwprobe.probe import is_live_root, probe
from hwprobe.profile import HardwareProfile

_GIB = 1 << 30


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwprobe",
        description=(
            "Probe this device's CPU, memory, board, Jetson and accelerators and print which "
            "inference engines suit it (tensorrt, openvino, llamacpp, onnxruntime), best first. "
            "On the live system it also imports the installed engines to see what they support."
        ),
        epilog="The JSON contract is described in docs/hwprobe.md.",
    )
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="read proc/, sys/, dev/ and etc/ under DIR instead of / (a saved or fake root); "
        "no runtime library is imported then",
    )
    parser.add_argument(
        "--no-runtime",
        action="store_true",
        help="do not import engine libraries even when probing /",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    return parser


def _gib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / _GIB:.1f} GiB"


def summary(profile: HardwareProfile) -> str:
    """A human-readable multi-line summary of a profile."""
    cpu, mem = profile.cpu, profile.memory
    lines = [
        f"device class : {profile.device_class}",
        f"engines      : {' > '.join(profile.engines)}",
        f"cpu          : {cpu.arch or 'unknown arch'}, {cpu.model or 'unknown model'}, "
        f"{cpu.cores if cpu.cores is not None else '?'} cores",
        f"features     : {', '.join(cpu.features) or 'none known'}",
        f"memory       : {_gib(mem.total_bytes)} total, {_gib(mem.available_bytes)} available",
        f"board        : {profile.board.vendor or 'unknown'} / {profile.board.model or 'unknown'}",
    ]
    if profile.jetson is not None:
        j = profile.jetson
        lines.append(
            f"jetson       : {j.model or 'unknown model'}, soc {j.soc or '?'}, "
            f"L4T {j.l4t or '?'}, JetPack {j.jetpack or '?'}"
        )
    for accelerator in profile.accelerators or []:
        lines.append(
            f"accelerator  : {accelerator.kind}: {accelerator.name}"
            f" ({_gib(accelerator.memory_bytes)})"
        )
    if not profile.accelerators:
        lines.append("accelerator  : none")
    if profile.runtime is not None:
        for name, engine in profile.runtime.engines.items():
            seen = engine.devices or engine.providers or []
            state = f"{engine.version or '?'} {seen}" if engine.installed else "not installed"
            lines.append(f"runtime      : {name} {state}")
        if profile.runtime.cuda_version:
            lines.append(f"runtime      : CUDA {profile.runtime.cuda_version}")
    lines.extend(f"warning      : {warning}" for warning in profile.warnings)
    lines.append(f"digest       : {profile.digest()}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hwprobe`` and ``python -m hwprobe``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        profile = probe(args.root, runtime=is_live_root(args.root) and not args.no_runtime)
    except ProbeError as exc:
        print(f"hwprobe: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(profile.model_dump(mode="json"), indent=2) if args.json else summary(profile)
    try:
        print(text)
    except BrokenPipeError:  # `hwprobe --json | head` closed the pipe early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
