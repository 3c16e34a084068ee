"""Every family edge users run converts: GGUF (llama.cpp's converter), OpenVINO INT8 and ONNX.

Random-weight checkpoints of each family (models.reference.families), built once per session;
llama.cpp must load each GGUF, generate from it and agree with transformers on the next token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.build.pipeline import BuildResult, build_targets
from models.keys import generate_key
from models.manifest import Manifest
from models.reference.families import FAMILIES, write_family_checkpoint
from tests.support.llama import open_llama

pytest.importorskip("transformers")
TARGETS = ("gguf-f32", "openvino-int8", "onnx")
FamilyBuild = tuple[str, Path, Path, BuildResult]  # family, checkpoint, model dir, result
# Teacher-forced over ~35 positions of corpus text, f32 GGUF against transformers f32. Random
# weights give near-ties in the top-1 (one miss of 33 seen for Gemma 2), so the logits
# themselves must correlate almost perfectly as well.
F32_FLOOR = 0.9
LOGIT_CORRELATION_FLOOR = 0.999


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_build(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> FamilyBuild:
    """One family's checkpoint and its build into every target (keep-going: failures listed)."""
    family: str = request.param
    root = tmp_path_factory.mktemp(family)
    hf = write_family_checkpoint(family, root / "hf")
    result = build_targets(
        hf, root / "model", TARGETS, generate_key(), name=family, progress=False, keep_going=True
    )
    return family, hf, root / "model", result


def test_every_target_builds(family_build: FamilyBuild) -> None:
    family, _, model_dir, result = family_build
    assert result.failed == {}, f"{family}: {result.failed}"
    ids = {v.id for v in result.manifest.variants}
    assert {"gguf-f32", "openvino-int8", "onnx-fp32"} <= ids
    assert result.manifest.chat_template  # each family carries its template
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".build-")]


def _token_ids(hf: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    text = "The lighthouse keeper wrote the record: the device reported 95 tokens in 44 seconds."
    ids: list[int] = tokenizer(text)["input_ids"]
    return ids[:48]


def test_llamacpp_loads_generates_and_agrees(family_build: FamilyBuild) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    family, hf, model_dir, result = family_build
    assert Manifest.load(model_dir) == result.manifest
    gguf_file = model_dir / "gguf" / "model-f32.gguf"
    llm = open_llama(gguf_file, n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    ids = _token_ids(hf)
    generated = llm.create_completion(ids, max_tokens=8, temperature=0.0)
    assert generated["usage"]["completion_tokens"] >= 1
    llm.reset()
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    agreement = float((got.argmax(-1) == want.argmax(-1)).mean())
    correlation = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    assert agreement >= F32_FLOOR, f"{family}: llama.cpp f32 top-1 agreement {agreement:.3f}"
    assert correlation >= LOGIT_CORRELATION_FLOOR, f"{family}: logit correlation {correlation}"
