"""llama.cpp's own HF -> GGUF converter, from the llama.cpp release the installed engine runs.

`convert_hf_to_gguf.py`, its `conversion/` package and its `gguf-py` ship in llama-cpp-python's
source distribution (`vendor/llama.cpp`). The first conversion downloads that sdist once with
pip, for exactly the installed llama-cpp-python version, and keeps only those files in the
cache; `$EDGEFLEET_LLAMACPP_SRC` may point at a llama.cpp checkout instead (air-gapped build
machines).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)

SOURCE_ENV = "EDGEFLEET_LLAMACPP_SRC"
DISTRIBUTION = "llama-cpp-python"
# What the converter needs from vendor/llama.cpp; the rest of the 75 MB sdist is dropped.
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


def _cache_root() -> Path:
    env = os.environ.get("EDGEFLEET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefleet"


def installed_version() -> str:
    """The installed llama-cpp-python version: the converter must come from the same release."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise BuildError(
            "GGUF targets need llama-cpp-python (its llama.cpp converts and quantizes): "
            "pip install 'edgefleet[llamacpp]'"
        ) from exc


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _extract(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            _, sep, rel = member.name.partition("/vendor/llama.cpp/")
            if not sep or not rel.startswith(_MEMBERS) or not (member.isfile() or member.isdir()):
                continue
            member.name = rel
            tar.extract(member, dest, filter="data")


def converter_dir() -> Path:
    """A directory holding convert_hf_to_gguf.py, conversion/ and gguf-py/ (fetched once)."""
    configured = os.environ.get(SOURCE_ENV)
    if configured:
        src = Path(configured)
        if not (src / "convert_hf_to_gguf.py").is_file():
            raise BuildError(f"${SOURCE_ENV}={src} holds no convert_hf_to_gguf.py")
        return src
    version = installed_version()
    root = _cache_root() / "llama.cpp-converter"
    target = root / version
    with _locked(root):
        if (target / "convert_hf_to_gguf.py").is_file():
            return target
        _LOGGER.info("fetching llama.cpp's converter (llama-cpp-python %s source)", version)
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                f"{DISTRIBUTION}=={version}",
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not sdists:
                raise BuildError(
                    f"pip could not download the {DISTRIBUTION}=={version} source for llama.cpp's "
                    f"converter: {done.stderr.strip()[-400:]}; or set ${SOURCE_ENV} to a "
                    "llama.cpp checkout of the same release"
                )
            staging = Path(tmp) / "llama.cpp"
            _extract(sdists[0], staging)
            if not (staging / "convert_hf_to_gguf.py").is_file():
                raise BuildError(
                    f"{sdists[0].name} carries no vendor/llama.cpp/convert_hf_to_gguf.py"
                )
            os.replace(staging, target)
        return target
