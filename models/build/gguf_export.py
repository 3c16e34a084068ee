"""HF checkpoint -> GGUF with llama.cpp's own converter, then llama.cpp's quantizer.

`convert_hf_to_gguf.py` comes from the llama.cpp release the installed llama-cpp-python runs
(models.build.llamacpp_source) and runs in a child process; it covers every family llama.cpp
supports. Quantization goes through llama-cpp-python's bindings (`llama_model_quantize`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Literal

from models.build.checkpoint import CheckpointInfo
from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)

_RUNNER = Path(__file__).with_name("llamacpp_runner.py")
_REASON_LINES = 30


def _failure_reason(lines: deque[str]) -> str:
    """The converter's own error line (an exception's last line), else its last line."""
    text = [line.strip() for line in lines if line.strip()]
    for i in range(len(text) - 1, -1, -1):
        line = text[i]
        if line.endswith("Error") and i > 0:  # a bare `assert`: the failing source line says why
            return f"{line} at `{text[i - 1]}`"
        if "Error" in line.split(":", 1)[0] or line.startswith("ERROR"):
            return line
    return text[-1] if text else "no output"


def convert_to_gguf(
    hf_dir: Path,
    out_file: Path,
    outtype: Literal["f32", "f16"] = "f32",
    verbose: bool = False,
    model_name: str | None = None,
) -> None:
    """Write an unquantized GGUF of `hf_dir` with llama.cpp's convert_hf_to_gguf.py."""
    from models.build.llamacpp_source import converter_dir

    command = [
        sys.executable,
        str(_RUNNER),
        str(converter_dir()),
        str(hf_dir),
        "--outfile",
        str(out_file),
        "--outtype",
        outtype,
    ]
    if model_name:
        command += ["--model-name", model_name]
    if verbose:
        command.append("--verbose")
    tail: deque[str] = deque(maxlen=_REASON_LINES)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:  # to the build log (quiet) or the terminal (-v)
            tail.append(line)
            sys.stderr.write(line)
    if child.returncode != 0 or not out_file.is_file():
        raise BuildError(
            f"llama.cpp's convert_hf_to_gguf.py could not convert {hf_dir.name}: "
            f"{_failure_reason(tail)}"
        )
    _LOGGER.info("converted %s -> %s (%s)", hf_dir.name, out_file.name, outtype)


def choose_q4_type(info: CheckpointInfo) -> Literal["q4_0", "q4_k_m"]:
    """'q4_k_m' when some row length fills 256-wide k-quant super-blocks, else 'q4_0'."""
    # llama.cpp gives the tensors whose rows do not fill super-blocks a legacy type (Q5_0 for
    # Q4_K) itself. Measured on real weights (docs/build.md): Q4_K_M 0.87 / 0.96 top-1
    # agreement on SmolLM2 (576 wide) / Gemma 3 270M (640), Q4_0 0.72 / 0.69 with wrong
    # answers. Only when no width fits (the 64-wide tiny model) is Q4_0 the plain choice.
    widths = (int(info.config["hidden_size"]), int(info.config["intermediate_size"]))
    return "q4_k_m" if any(w % 256 == 0 for w in widths) else "q4_0"


def quantize_gguf(src: Path, dst: Path, precision: str, threads: int = 0) -> None:
    """Quantize an F32/F16 GGUF with llama.cpp (llama-cpp-python's bindings)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise BuildError(
            "quantized GGUF needs llama-cpp-python: pip install 'edgefleet[llamacpp]'"
        ) from exc
    ftypes = {
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    }
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[precision]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise BuildError(f"llama.cpp could not quantize {src.name} to {precision} (code {rc})")
    _LOGGER.info("quantized %s -> %s (%s)", src.name, dst.name, precision)
