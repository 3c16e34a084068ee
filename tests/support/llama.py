"""llama-cpp-python's `Llama` for tests that use llama.cpp directly, with the agent's CPU guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def open_llama(path: Path, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(path, **kwargs)`, without AMX repacking where those kernels fault."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from models.llamacpp_amx import avoid_faulting_amx

    avoid_faulting_amx(llama_cpp, path)
    return llama_cpp.Llama(str(path), **kwargs)
