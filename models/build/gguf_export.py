"""HF Llama checkpoint -> GGUF (F32/F16) with our own converter, then llama.cpp 4-bit quantize.

HF stores Q and K projections with the rotary halves split (rotate_half layout); GGML applies
rotary to interleaved pairs, the original Meta layout. `unpermute_rotary` undoes what HF's
conversion script did, per head: query weights over all heads, key weights over the KV heads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from models.build.checkpoint import CheckpointInfo
from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)

_CONTROL = 3  # gguf.TokenType.CONTROL
_NORMAL = 1  # gguf.TokenType.NORMAL


def unpermute_rotary(weight: Any, n_heads: int) -> Any:
    """Reorder the rows of a Q or K projection from HF's half-split to interleaved rotary pairs."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _tokenizer_tables(info: CheckpointInfo) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id, their GGUF types and the BPE merges as 'a b' strings."""
    vocab: dict[str, int] = dict(info.tokenizer_json["model"]["vocab"])
    special = {t["content"]: int(t["id"]) for t in info.tokenizer_json.get("added_tokens", [])}
    vocab.update(special)
    size = int(info.config["vocab_size"])
    by_id = {i: tok for tok, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [
        _CONTROL if (t in special or i not in by_id) else _NORMAL for i, t in enumerate(tokens)
    ]
    merges = [
        m if isinstance(m, str) else " ".join(m) for m in info.tokenizer_json["model"]["merges"]
    ]
    if not merges:
        raise BuildError("tokenizer.json has no BPE merges; llama.cpp cannot load a gpt2 vocab")
    return tokens, types, merges


def _load_tensors(hf_dir: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise BuildError(f"{hf_dir} has no *.safetensors weights; re-save with safe_serialization")
    tensors: dict[str, Any] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def write_gguf(info: CheckpointInfo, out_file: Path, name: str, f16: bool = False) -> None:
    """Write an unquantized GGUF (F32, or F16 for 2-D weights) for llama.cpp."""
    import gguf
    import numpy as np

    cfg = info.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, info.layers)
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_context_length(info.context_length)
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(info.layers)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(info.heads)
    writer.add_head_count_kv(info.kv_heads)
    writer.add_rope_dimension_count(info.head_dim)
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    ftype = gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(ftype))

    tokens, types, merges = _tokenizer_tables(info)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, which ByteLevel(use_regex) uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (
        ("bos_token", writer.add_bos_token_id),
        ("eos_token", writer.add_eos_token_id),
    ):
        token_id = info.token_id(info.special_token(key))
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(False)  # the HF tokenizer adds no BOS; the chat template decides
    writer.add_chat_template(info.chat_template)

    tensors = _load_tensors(info.hf_dir)
    if "lm_head.weight" not in tensors:  # tied embeddings: llama.cpp wants output.weight too
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    for hf_name, data in tensors.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise BuildError(f"no GGUF name for tensor {hf_name}; is this a plain Llama model?")
        array = np.asarray(data, dtype=np.float32)
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = unpermute_rotary(array, info.heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = unpermute_rotary(array, info.kv_heads)
        if f16 and array.ndim == 2:
            array = array.astype(np.float16)
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def choose_q4_type(info: CheckpointInfo) -> Literal["q4_0", "q4_k_m"]:
    """'q4_k_m' when every row length is a multiple of 256 (k-quant super-block), else 'q4_0'."""
    widths = (int(info.config["hidden_size"]), int(info.config["intermediate_size"]))
    return "q4_k_m" if all(w % 256 == 0 for w in widths) else "q4_0"


def quantize_gguf(src: Path, dst: Path, precision: str, threads: int = 0) -> None:
    """Quantize an F32/F16 GGUF with llama.cpp (llama-cpp-python's bindings)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise BuildError(
            "4-bit GGUF needs llama-cpp-python: pip install 'edgefleet[llamacpp]'"
        ) from exc
    ftypes = {
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    }
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[precision]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise BuildError(f"llama.cpp could not quantize {src.name} to {precision} (code {rc})")
    _LOGGER.info("quantized %s -> %s (%s)", src.name, dst.name, precision)
