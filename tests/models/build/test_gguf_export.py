"""GGUF export through llama.cpp's own converter: its metadata, its errors, the quant choice."""

from __future__ import annotations

import json
import shutil
from collections import deque
from pathlib import Path

import pytest

from models.build.checkpoint import CheckpointInfo
from models.build.errors import BuildError
from models.build.gguf_export import _failure_reason, choose_q4_type, convert_to_gguf
from models.build.llamacpp_runner import _generic_pre_tokenizer
from models.gguf_metadata import read_metadata
from models.manifest import Manifest


def _info(hidden: int, intermediate: int) -> CheckpointInfo:
    config = {"hidden_size": hidden, "intermediate_size": intermediate}
    return CheckpointInfo(Path("."), config, {}, {}, "{{ messages }}")


def test_q4_type_is_k_quant_when_some_rows_fill_super_blocks() -> None:
    assert choose_q4_type(_info(64, 192)) == "q4_0"
    assert choose_q4_type(_info(576, 1536)) == "q4_k_m"  # SmolLM2-135M
    assert choose_q4_type(_info(640, 2048)) == "q4_k_m"  # Gemma 3 270M
    assert choose_q4_type(_info(512, 1536)) == "q4_k_m"


def test_the_converters_own_error_line_is_the_reason() -> None:
    lines = deque(
        [
            "INFO:hf-to-gguf:Loading model: x\n",
            "Traceback (most recent call last):\n",
            '  File "convert_hf_to_gguf.py", line 9, in main\n',
            "NotImplementedError: Architecture 'GPT2LMHeadModel' not supported!\n",
        ]
    )
    assert _failure_reason(lines) == (
        "NotImplementedError: Architecture 'GPT2LMHeadModel' not supported!"
    )
    assert _failure_reason(deque(["only this\n", "\n"])) == "only this"


def test_unknown_byte_level_tokenizer_gets_the_gpt2_pre_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}})
    )
    assert _generic_pre_tokenizer(tmp_path) == "gpt-2"
    (tmp_path / "tokenizer.json").write_text(json.dumps({"pre_tokenizer": {"type": "Metaspace"}}))
    assert _generic_pre_tokenizer(tmp_path) == "default"


def test_gguf_carries_tokenizer_template_and_gqa_shape(tiny_model_dir: Path) -> None:
    fields = read_metadata(tiny_model_dir / "gguf" / "model-f32.gguf").fields
    manifest = Manifest.load(tiny_model_dir)
    assert fields["general.name"] == manifest.name
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"  # our own tokenizer: generic
    assert len(fields["tokenizer.ggml.merges"]) > 0
    assert fields["tokenizer.chat_template"] == manifest.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == manifest.tokenizer.eos_token_id
    assert fields["llama.attention.head_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2


def test_unsupported_weights_fail_with_the_converters_reason(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    hf = tmp_path / "hf"
    shutil.copytree(tiny_model_dir / "hf", hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchLM"]}))
    with pytest.raises(BuildError, match="could not convert hf: .*NoSuchLM"):
        convert_to_gguf(hf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
