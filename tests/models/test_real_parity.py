"""Parity on real weights: SmolLM2-135M-Instruct and Gemma 3 270M, every built engine against
transformers fp32 on the same checkpoint (teacher-forced top-1 over the English text in
tests/fixtures/text/english.txt, 476 and 474 positions), and the same factual answers.

Each model is built into gguf-q4, gguf-q8, openvino-int8 and onnx by the build pipeline, and
the build is cached by everything it depends on (tests/support/real_builds.py). Floors come
from bench/parity.py's figures (docs/build.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.build.parity import EngineParity, measure, wrong_answers
from models.manifest import Manifest

TEXT = Path(__file__).resolve().parents[1] / "fixtures" / "text" / "english.txt"

# Measured on this x86-64 (AVX-512, 2 threads), 476 / 474 positions (SmolLM2 / Gemma 3):
#   onnx-fp32 (ONNX Runtime)       1.000 / 1.000  fp32 throughout: floor 0.99 leaves two or
#                                                 three near-ties to other CPUs' kernels
#   gguf-q8_0 (llama.cpp)          0.954 / 0.977  8-bit weights, activations quantized to
#                                                 8 bits in the matmuls: floor 0.90
#   openvino-int8 (NNCF, CPU bf16) 0.943 / 0.941  floor 0.88
#   gguf-q4_k_m (llama.cpp)        0.868 / 0.958  floor 0.80 (Q4_0 measured 0.72 / 0.69)
# The floors sit about one standard error of quantization noise (0.02-0.05) under the lowest
# measurement; a wrong conversion (a layout or tokenizer mistake) lands far below (< 0.3).
FLOORS = {"onnx-fp32": 0.99, "gguf-q8_0": 0.90, "openvino-int8": 0.88, "gguf-q4": 0.80}
# Answers allowed to differ, as measured: OpenVINO runs in bf16 by default on CPUs with
# AVX512_BF16 (this one); there Gemma 3's INT8 IR says " gold." where transformers says " Au."
# (a near-tie: with INFERENCE_PRECISION_HINT=f32 it says " Au."). Elsewhere it answers right.
MAY_MISS = {("gemma-3-270m", "openvino-int8", "The chemical symbol for gold is")}
pytest.importorskip("transformers")


def _floor(variant_id: str) -> float:
    return next(f for prefix, f in FLOORS.items() if variant_id.startswith(prefix))


def _measure(hf_dir: Path, model_dir: Path) -> list[EngineParity]:
    ids = [v.id for v in Manifest.load(model_dir).variants if v.id != "onnx-trt-fp16"]
    assert len(ids) == 4, ids
    return measure(hf_dir, model_dir, ids, TEXT)


@pytest.fixture(scope="module")
def smollm2_parity(smollm2_hf: Path, smollm2_built: Path) -> list[EngineParity]:
    """SmolLM2's parity rows (transformers first)."""
    return _measure(smollm2_hf, smollm2_built)


@pytest.fixture(scope="module")
def gemma3_parity(gemma3_hf: Path, gemma3_built: Path) -> list[EngineParity]:
    """Gemma 3's parity rows (transformers first)."""
    return _measure(gemma3_hf, gemma3_built)


def _check(model: str, rows: list[EngineParity]) -> None:
    truth, *engines = rows
    assert truth.positions >= 300
    assert not wrong_answers(truth), "transformers itself must answer every question"
    for row in engines:
        floor = _floor(row.engine)
        assert row.agreement >= floor, f"{row.engine}: agreement {row.agreement:.3f} < {floor}"
        wrong = [w for w in wrong_answers(row) if not _allowed(model, row.engine, w)]
        assert not wrong, f"{row.engine}: {wrong}"


def _allowed(model: str, engine: str, wrong: str) -> bool:
    return any((model, engine) == (m, e) and wrong.startswith(repr(q)) for m, e, q in MAY_MISS)


# Building a real model into four targets and running five engines over it takes minutes on
# 2 cores, more under load: past the suite's default per-test timeout.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smollm2_engines_agree_with_transformers(smollm2_parity: list[EngineParity]) -> None:
    _check("smollm2", smollm2_parity)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gemma3_engines_agree_with_transformers(gemma3_parity: list[EngineParity]) -> None:
    _check("gemma-3-270m", gemma3_parity)


@pytest.mark.slow
def test_real_builds_leave_no_intermediates(smollm2_built: Path, gemma3_built: Path) -> None:
    for model_dir in (smollm2_built, gemma3_built):
        listed = {f.path for v in Manifest.load(model_dir).variants for f in v.files}
        on_disk = {
            p.relative_to(model_dir).as_posix()
            for p in model_dir.rglob("*")
            if p.is_file() and p.name not in ("manifest.json", "manifest.sig")
        }
        assert on_disk == listed
