"""Time the reference checkpoints and every build target; print artifact sizes.

Usage: .venv/bin/python bench/build_models.py [tiny] [mid]
Builds in a temporary directory (not the cache) so every figure is a cold build.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from models.build.pipeline import build_targets
from models.reference import reference_key, reference_targets
from models.reference.checkpoint import write_checkpoint


def _mib(n: int) -> str:
    return f"{n / 2**20:8.2f} MiB"


def bench(kind: str) -> None:
    """Build `kind` from scratch, target by target, and print times and sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        write_checkpoint(kind, work / "hf")
        print(f"{kind}: checkpoint (tokenizer + weights) {time.perf_counter() - started:6.1f} s")
        hf_bytes = sum(p.stat().st_size for p in (work / "hf").iterdir())
        print(f"{kind}: hf checkpoint {_mib(hf_bytes)}")
        for target in reference_targets(kind):
            started = time.perf_counter()
            manifest = build_targets(
                work / "hf", work / target, [target], reference_key(), name=kind, progress=False
            ).manifest
            elapsed = time.perf_counter() - started
            for v in manifest.variants:
                own = sum(f.size for f in v.files if f.path != "tokenizer.json")
                print(
                    f"{kind}: {target:14s} {elapsed:6.1f} s  {v.id:14s} files {_mib(own)}"
                    f"  memory_bytes {_mib(v.memory_bytes)}"
                )
        print(f"{kind}: parameters {manifest.parameters:,}")


def main() -> None:
    """Run the benchmark for the kinds named on the command line (default: tiny and mid)."""
    logging.basicConfig(level=logging.WARNING)
    for kind in sys.argv[1:] or ["tiny", "mid"]:
        bench(kind)


if __name__ == "__main__":
    main()
