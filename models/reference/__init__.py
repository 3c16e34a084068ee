"""Reference models: deterministic tiny (tests), mid and bench (benchmarks) Llamas, cached.

THE REFERENCE SIGNING KEY IS A PUBLIC TEST KEY. It is derived from a constant seed written
below, so anyone can sign with it. It exists only so cached reference models verify the same
way everywhere; never trust it on a real device or control plane.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from models.build.errors import BuildError
from models.manifest import SIGNATURE_FILE, Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from models.build.targets import Q4Type

_LOGGER = logging.getLogger(__name__)

# Bump when the generator, the corpus or the build pipeline changes what gets written.
GENERATOR_VERSION = "4"
KINDS = ("tiny", "mid", "bench")
REFERENCE_KEY_SEED = b"edgefleet reference models - PUBLIC TEST KEY - never trust in production"
_TARGETS = {
    "tiny": ("gguf-q4", "gguf-f32", "openvino-int8", "openvino-fp", "onnx"),
    "mid": ("gguf-q4", "openvino-int8", "onnx"),
    "bench": ("gguf-q4",),
}
# Kinds whose gguf-q4 is forced to a quantization (bench: Q4_0, as the figures it is measured
# against); the others let the pipeline choose.
_Q4_TYPES: dict[str, Q4Type] = {"bench": "q4_0"}


def reference_key() -> Ed25519PrivateKey:
    """The public, deterministic TEST key that signs reference models (see module docstring)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(REFERENCE_KEY_SEED).digest())


def cache_root() -> Path:
    """$EDGEFLEET_CACHE, or ~/.cache/edgefleet."""
    env = os.environ.get("EDGEFLEET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefleet"


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python (needed for the 4-bit GGUF) can be imported."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def reference_targets(kind: str) -> list[str]:
    """The build targets of a reference model; gguf-q4 only where llama.cpp is installed."""
    targets = list(_TARGETS[kind])
    if not llama_cpp_available():
        _LOGGER.warning("llama-cpp-python is not installed: reference %s has no 4-bit GGUF", kind)
        targets.remove("gguf-q4")
    if not targets:
        raise BuildError(
            f"reference {kind} is only a 4-bit GGUF and needs llama-cpp-python: "
            "pip install 'edgefleet[llamacpp]'"
        )
    return targets


def _build_into(kind: str, work: Path) -> None:
    from models.build.pipeline import build_targets
    from models.reference.checkpoint import write_checkpoint

    write_checkpoint(kind, work / "hf")
    build_targets(
        work / "hf",
        work,
        reference_targets(kind),
        reference_key(),
        name=f"edgefleet-ref-{kind}",
        version=GENERATOR_VERSION,
        progress=False,
        q4_type=_Q4_TYPES.get(kind),
    )


def cached_reference(kind: str) -> Path:
    """The cache directory holding the built `kind` model; builds it once, under a file lock."""
    if kind not in KINDS:
        raise BuildError(f"unknown reference model {kind!r}; choose from {', '.join(KINDS)}")
    suffix = "" if llama_cpp_available() else "-noq4"
    root = cache_root() / "reference"
    final = root / f"{kind}-{GENERATOR_VERSION}{suffix}"
    if (final / SIGNATURE_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest workers wait for the first builder
        if (final / SIGNATURE_FILE).is_file():
            return final
        work = root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        _LOGGER.info("building reference model %s into %s (once per cache)", kind, final)
        try:
            _build_into(kind, work)
            shutil.rmtree(final, ignore_errors=True)  # a dir without a signature is debris
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def build_reference(kind: str, out_dir: Path, key: Ed25519PrivateKey | None = None) -> Manifest:
    """Copy the cached `kind` model (checkpoint in out_dir/hf, variants, manifest) to `out_dir`.

    With `key`, the manifest is re-signed with it; without, it keeps the public test key.
    """
    source = cached_reference(kind)
    # A copy, not hard links: tests that tamper with files must not corrupt the cache.
    shutil.copytree(source, out_dir, dirs_exist_ok=True)
    manifest = Manifest.load(out_dir)
    if key is not None:
        from models.signing import write_signed_manifest

        write_signed_manifest(out_dir, manifest, key)
    return manifest


__all__ = ["GENERATOR_VERSION", "KINDS", "build_reference", "cached_reference", "reference_key"]
