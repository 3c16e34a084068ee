"""repair_tokenizer reads the GGUF with models.gguf_metadata: repairing the cached checkpoints'
tokenizer files again (already repaired when the cache was made) changes no byte."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from models.gguf_tokenizer import repair_tokenizer


@pytest.mark.parametrize(
    ("checkpoint", "gguf"),
    [
        ("smollm2_hf", "smollm2_gguf"),  # byte-level BPE: JSON rewritten
        pytest.param("gemma3_hf", "gemma3_gguf", marks=pytest.mark.slow),  # SentencePiece
    ],
)
def test_repairing_a_repaired_checkpoint_changes_nothing(
    checkpoint: str, gguf: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(checkpoint)
    for file in source.iterdir():
        if file.suffix != ".safetensors":  # the weights are not the tokenizer's business
            shutil.copy(file, tmp_path / file.name)
    repair_tokenizer(tmp_path, request.getfixturevalue(gguf))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in source.iterdir() if p.suffix != ".safetensors"
    )
    changed = [p.name for p in tmp_path.iterdir() if not filecmp.cmp(p, source / p.name, False)]
    assert changed == []
