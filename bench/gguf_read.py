"""Time reading the real GGUFs' metadata: read_gguf (our reader) vs the gguf package's GGUFReader.

Usage: .venv/bin/python bench/gguf_read.py
What `edgefleet-models build FILE.gguf` and the dashboard's GGUF upload wait for before copying.
"""

from __future__ import annotations

import time

from models.build.gguf_info import read_gguf
from models.real_models import GEMMA3, SMOLLM2, fetch_gguf


def main() -> None:
    """Print seconds per file for read_gguf and for GGUFReader alone."""
    from gguf import GGUFReader

    for model in (SMOLLM2, GEMMA3):
        path = fetch_gguf(model)
        started = time.perf_counter()
        info = read_gguf(path)
        ours = time.perf_counter() - started
        started = time.perf_counter()
        GGUFReader(str(path), "r")
        theirs = time.perf_counter() - started
        print(
            f"{path.name}: read_gguf {ours:6.2f} s, GGUFReader {theirs:6.2f} s "
            f"({info.architecture}, {info.parameters:,} parameters)"
        )


if __name__ == "__main__":
    main()
