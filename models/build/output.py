"""How a build talks: a scratch dir, quiet converters unless verbose, and dependency checks first.

The converters (llama.cpp's quantizer, NNCF, optimum, torch's tracer, openvino-tokenizers) log
from C++ and Python alike, so quiet mode redirects the process's stdout and stderr file
descriptors into `build.log` in the scratch dir for the duration of the build; the progress bar
writes to a duplicate of the real stderr. A failure's reason is in the error either way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)

# Modules each target imports, and the extra that installs them.
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gguf": (("llama_cpp", "torch", "transformers", "gguf"), "build,llamacpp"),
    "openvino": (
        ("openvino", "openvino_tokenizers", "optimum.intel", "nncf", "transformers"),
        "build,openvino",
    ),
    "onnx": (("optimum.exporters.onnx", "onnx", "transformers"), "build"),
}


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def check_target_dependencies(targets: list[str]) -> None:
    """Raise BuildError before any conversion when a target's converter is not installed."""
    for target in targets:
        family = target.split("-")[0]
        modules, extra = _NEEDS.get(family, ((), ""))
        missing = [m for m in modules if _missing(m)]
        if missing:
            raise BuildError(
                f"target {target} needs {', '.join(missing)}: pip install 'edgefleet[{extra}]'"
            )


@contextlib.contextmanager
def _redirected_fds(log_file: Path) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log_file.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def build_output(out_dir: Path, verbose: bool) -> Iterator[tuple[Path, TextIO]]:
    """A scratch dir inside `out_dir` (removed afterwards) and the stream for progress."""
    work_dir = Path(tempfile.mkdtemp(dir=out_dir, prefix=".build-"))
    try:
        if verbose:
            yield work_dir, sys.stderr
            return
        terminal = os.fdopen(os.dup(2), "w", buffering=1)
        try:
            with (
                _redirected_fds(work_dir / "build.log"),
                warnings.catch_warnings(),
                _quiet_loggers(),
            ):
                warnings.simplefilter("ignore")
                yield work_dir, terminal
        finally:
            terminal.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Third-party loggers at WARNING while quiet (they may log to their own handlers)."""
    names = ("nncf", "optimum", "transformers", "torch", "openvino")
    levels = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
