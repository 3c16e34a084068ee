"""Fixtures for the models tests: a signing key and a small signed model directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.keys import generate_key
from models.manifest import Manifest, Variant
from models.signing import file_entry, write_signed_manifest
from tests.support.real_builds import built_model

# Two variants sharing the tokenizer, like a real build output.
VARIANT_FILES = {
    "gguf-q4_0": ["gguf-q4_0/model.gguf", "tokenizer.json"],
    "onnx-fp16": ["onnx-fp16/model.onnx", "onnx-fp16/config.json", "tokenizer.json"],
}


def make_model_dir(root: Path, key: Ed25519PrivateKey, version: str = "1.0") -> Manifest:
    """Write a fake two-variant model into `root`, sign it, and return its manifest."""
    contents = {
        "gguf-q4_0/model.gguf": os.urandom(200_000),
        "tokenizer.json": b'{"model": {"type": "BPE"}}',
        "onnx-fp16/model.onnx": os.urandom(50_000),
        "onnx-fp16/config.json": b'{"hidden_size": 64}',
    }
    for rel, data in contents.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    fmt = {"gguf-q4_0": ("gguf", "q4_0", "llamacpp"), "onnx-fp16": ("onnx", "f16", "onnxruntime")}
    variants = [
        Variant.model_validate(
            {
                "id": vid,
                "format": fmt[vid][0],
                "precision": fmt[vid][1],
                "engines": [fmt[vid][2]],
                "files": [file_entry(root, rel) for rel in files],
                "memory_bytes": 1 << 20,
            }
        )
        for vid, files in VARIANT_FILES.items()
    ]
    manifest = Manifest(
        name="tiny-test",
        version=version,
        architecture="llama",
        context_length=256,
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        variants=variants,
    )
    write_signed_manifest(root, manifest, key)
    return manifest


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key."""
    return generate_key()


@pytest.fixture
def model_dir(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    """A signed two-variant model directory."""
    root = tmp_path / "model"
    root.mkdir()
    make_model_dir(root, signing_key)
    return root


@pytest.fixture(scope="session")
def smollm2_built(smollm2_hf: Path) -> Path:
    """SmolLM2's real checkpoint built into every real target (read-only; cached by its inputs)."""
    pytest.importorskip("llama_cpp")
    return built_model(smollm2_hf, "smollm2")


@pytest.fixture(scope="session")
def gemma3_built(gemma3_hf: Path) -> Path:
    """Gemma 3 270M's real checkpoint built into every real target (read-only; cached)."""
    pytest.importorskip("llama_cpp")
    return built_model(gemma3_hf, "gemma-3-270m")
