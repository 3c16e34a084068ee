"""Root fixtures: a clean environment, and the tiny reference model built once per cache."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# Knobs of the test run itself (caches, the PostgreSQL switch), not product settings.
KEPT_ENV = (
    "EDGEFLEET_TEST_",
    "EDGEFLEET_CACHE",
    "EDGEFLEET_MODEL_CACHE",
    "EDGEFLEET_LLAMACPP_SRC",
    "EDGEFLEET_BUILD_ONLY_IF_CACHED",
    "EDGEFLEET_FUZZ_",
)


@pytest.fixture(autouse=True)
def clean_edgefleet_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No EDGEFLEET_* setting from the shell reaches a test (e.g. EDGEFLEET_CP_AUTO_MIGRATE=0)."""
    for name in list(os.environ):
        if name.startswith("EDGEFLEET_") and not name.startswith(KEPT_ENV):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed tiny reference model dir (manifest.json, variants, hf/). Treat it as read-only.

    Variants: gguf-q4_0 (absent when llama-cpp-python is missing), gguf-f32, openvino-int8,
    openvino-fp32, onnx-fp32 and onnx-trt-fp16. Signed with the public reference TEST key.
    """
    from models.reference import build_reference

    out = tmp_path_factory.mktemp("tiny-model") / "tiny"
    build_reference("tiny", out)
    return out


@pytest.fixture
def tiny_model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may change or tamper with."""
    out = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def reference_key_public() -> Ed25519PublicKey:
    """The public half of the reference TEST key that signs reference models."""
    from models.reference import reference_key

    return reference_key().public_key()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (real weights, Llama architecture, ChatML), from the cache."""
    from models.real_models import SMOLLM2, fetch_gguf

    return fetch_gguf(SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M base Q4_K_M (real weights, gemma3 architecture, no chat template)."""
    from models.real_models import GEMMA3, fetch_gguf

    return fetch_gguf(GEMMA3)


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """A Hugging Face checkpoint dequantized from SmolLM2's GGUF (cached; read-only)."""
    pytest.importorskip("transformers")
    from models.real_models import SMOLLM2, hf_checkpoint

    return hf_checkpoint(SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_hf() -> Path:
    """A Hugging Face checkpoint dequantized from Gemma 3 270M's GGUF (cached; read-only)."""
    pytest.importorskip("transformers")
    from models.real_models import GEMMA3, hf_checkpoint

    return hf_checkpoint(GEMMA3)
