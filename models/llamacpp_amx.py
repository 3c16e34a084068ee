"""llama.cpp without AMX repacking on CPUs that advertise AMX but fault in ggml's AMX kernels.

ggml repacks weights for Intel AMX when the CPU advertises it and the kernel grants the tile
state. Measured on a Firecracker guest of a Sapphire Rapids host (amx_tile, amx_int8 in
/proc/cpuinfo, ARCH_REQ_XCOMP_PERM granted, `ldtilecfg`/`tilezero` fine on their own):
llama-cpp-python 0.3.36 dies with SIGILL on `tilezero` in `ggml_backend_amx_mul_mat` on any
prompt of more than a few tokens, in every engine and test. So on a CPU that advertises AMX,
a child process evaluates a 32-token prompt on the model once; if it dies of SIGILL, this
process loads models without llama.cpp's extra CPU buffer types (`use_extra_bufts = false`,
what `llama-server --no-repack` does): slower prompt processing, no crash. CPUs without AMX
(nearly every edge device) skip the probe.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 120.0

_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=128, n_batch=128, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"hello world " * 16)[:32])
"""
# per model file: whether ggml repacks for AMX depends on its tensor types and shapes
_probed: dict[Path, bool] = {}


def advertises_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU says it has AMX tiles (Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " amx_tile" in text


def amx_faults(gguf: Path) -> bool:
    """True when llama.cpp dies of SIGILL evaluating a prompt on `gguf` (probed once a file).

    An f32 model never reaches the AMX kernels, a Q4_0 one does: a clean probe on one file says
    nothing about the next, so each file is probed until one faults.
    """
    key = gguf.resolve()
    if key in _probed:
        return _probed[key]
    if not sys.platform.startswith("linux") or not advertises_amx():
        _probed[key] = False
        return False
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(gguf)],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _LOGGER.warning("could not probe llama.cpp's AMX kernels (%s); leaving them on", exc)
        return False
    _probed[key] = probe.returncode == -signal.SIGILL
    return _probed[key]


def avoid_faulting_amx(lib: Any, gguf: Path) -> None:
    """Make llama.cpp load models without AMX repacking when its AMX kernels fault here."""
    default = lib.llama_model_default_params
    if getattr(default, "without_extra_bufts", False) or not amx_faults(gguf):
        return
    _LOGGER.warning(
        "this CPU advertises AMX but llama.cpp's AMX kernels fault on it (a VM that does not "
        "pass AMX through): loading without AMX repacking"
    )

    def without_extra_bufts() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    without_extra_bufts.without_extra_bufts = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = without_extra_bufts
    bindings = getattr(lib, "llama_cpp", None)  # Llama() calls it through the ctypes module
    if bindings is not None:
        bindings.llama_model_default_params = without_extra_bufts
