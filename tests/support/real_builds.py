"""Real checkpoints built into every real target, cached under the model cache by what made them.

A build of SmolLM2 and Gemma 3 into gguf-q4, gguf-q8, openvino-int8 and onnx takes about seven
minutes on 2 cores, and the parity tests read the result only. The cache key is everything the
output depends on: the bytes of every file in the `models` package (the build code), the
versions of the converters it calls, the checkpoint version, the model's name and the targets.
Change any of these and the next run builds again; nothing else can make a stale build pass.
A build is published with a rename under a file lock (as tests/support/real_openvino.py), and
the older builds of the same model are removed then, so one model keeps one build on disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import models
from models.manifest import MANIFEST_FILE
from models.real_models import CHECKPOINT_VERSION, cache_dir

REAL_TARGETS = ("gguf-q4", "gguf-q8", "openvino-int8", "onnx")
# The distributions whose code turns a checkpoint into the targets' files.
CONVERTERS = (
    "gguf",
    "llama_cpp_python",
    "nncf",
    "onnx",
    "onnxruntime",
    "openvino",
    "optimum",
    "optimum-intel",
    "torch",
    "transformers",
)
BUILD_SECONDS_FILE = "build-seconds.json"  # beside the model directory: what the build took


MODELS_PACKAGE = Path(models.__file__).parent


def build_key(
    name: str, targets: tuple[str, ...] = REAL_TARGETS, package: Path = MODELS_PACKAGE
) -> str:
    """A digest of everything a real build's output depends on."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    for dist in CONVERTERS:
        digest.update(f"{dist}=={_version(dist)}\0".encode())
    digest.update(f"{CHECKPOINT_VERSION}\0{name}\0{','.join(targets)}".encode())
    return digest.hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def built_model(checkpoint: Path, name: str) -> Path:
    """`checkpoint` built by `build_targets` into every real target (read-only), cached."""
    from models.build.pipeline import build_targets
    from models.keys import generate_key

    root = cache_dir() / "built"
    root.mkdir(parents=True, exist_ok=True)
    home = root / f"{name}-{build_key(name)}"
    target = home / "m"
    with (root / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MANIFEST_FILE).is_file():
            return target
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
            staging = Path(tmp) / "build"
            result = build_targets(
                checkpoint, staging / "m", REAL_TARGETS, generate_key(), name=name, progress=False
            )
            (staging / BUILD_SECONDS_FILE).write_text(json.dumps(result.seconds))
            shutil.rmtree(home, ignore_errors=True)
            os.replace(staging, home)
        for older in root.glob(f"{name}-*"):
            if older != home:
                shutil.rmtree(older, ignore_errors=True)
    return target
