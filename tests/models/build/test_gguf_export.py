"""The GGUF converter: rotary un-permutation, quant type choice and the written metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.build.checkpoint import CheckpointInfo, read_checkpoint
from models.build.gguf_export import choose_q4_type, unpermute_rotary
from models.manifest import Manifest


def hf_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """What transformers' Llama conversion does to Meta's interleaved Q/K rows."""
    rows, cols = weight.shape
    permuted: np.ndarray = (
        weight.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
    )
    return permuted


@pytest.mark.parametrize(("n_heads", "head_dim"), [(4, 16), (2, 16), (8, 64)])
def test_unpermute_rotary_undoes_the_hf_permutation(n_heads: int, head_dim: int) -> None:
    meta = np.random.default_rng(0).standard_normal((n_heads * head_dim, 64)).astype(np.float32)
    assert np.array_equal(unpermute_rotary(hf_permute(meta, n_heads), n_heads), meta)
    assert not np.array_equal(hf_permute(meta, n_heads), meta)


def _info(hidden: int, intermediate: int) -> CheckpointInfo:
    config = {"hidden_size": hidden, "intermediate_size": intermediate}
    return CheckpointInfo(Path("."), config, {}, {}, "{{ messages }}")


def test_q4_type_is_k_quant_only_when_rows_fill_super_blocks() -> None:
    assert choose_q4_type(_info(64, 192)) == "q4_0"
    assert choose_q4_type(_info(512, 1408)) == "q4_0"
    assert choose_q4_type(_info(512, 1536)) == "q4_k_m"


def _field(reader: object, key: str) -> object:
    field = reader.fields[key]  # type: ignore[attr-defined]
    return field.contents()


def test_gguf_carries_tokenizer_template_and_gqa_shape(tiny_model_dir: Path) -> None:
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(tiny_model_dir / "gguf" / "model-f32.gguf"))
    manifest = Manifest.load(tiny_model_dir)
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0  # type: ignore[arg-type]
    assert _field(reader, "tokenizer.chat_template") == manifest.chat_template
    assert _field(reader, "tokenizer.ggml.eos_token_id") == manifest.tokenizer.eos_token_id
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.attention.head_count_kv") == 2


def test_gguf_k_weights_are_unpermuted_over_kv_heads(tiny_model_dir: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from safetensors.numpy import load_file

    info = read_checkpoint(tiny_model_dir / "hf")
    hf = load_file(str(tiny_model_dir / "hf" / "model.safetensors"))
    reader = gguf.GGUFReader(str(tiny_model_dir / "gguf" / "model-f32.gguf"))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    k_hf = hf["model.layers.1.self_attn.k_proj.weight"]
    q_hf = hf["model.layers.1.self_attn.q_proj.weight"]
    assert np.array_equal(tensors["blk.1.attn_k.weight"], unpermute_rotary(k_hf, info.kv_heads))
    assert np.array_equal(tensors["blk.1.attn_q.weight"], unpermute_rotary(q_hf, info.heads))
    assert np.array_equal(
        tensors["blk.1.attn_v.weight"], hf["model.layers.1.self_attn.v_proj.weight"]
    )
