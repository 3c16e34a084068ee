"""Small random-weight checkpoints of each family edge users run, from transformers' own configs.

They prove conversion, not quality: the same tiny shape (hidden 64, 2 layers, GQA 4/2) in each
family's own config class and architecture, seeded weights, and a tokenizer of the kind the
family uses: the reference byte-level BPE (Llama/SmolLM, Mistral, Qwen, Phi-3 as Phi-4 does)
or a SentencePiece BPE trained on the same corpus (Gemma), both 512 tokens.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from models.reference.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    corpus_text,
    save_hf_tokenizer,
    train_tokenizer,
)

VOCAB = 512
CONTEXT = 256
_SHAPE: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": CONTEXT,
}
# family -> (transformers config class, extra config values, tokenizer kind)
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "llama": ("LlamaConfig", {}, "bpe"),
    "mistral": ("MistralConfig", {"sliding_window": None}, "bpe"),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}, "bpe"),
    "qwen3": ("Qwen3Config", {"head_dim": 16}, "bpe"),
    "gemma2": ("Gemma2Config", {"head_dim": 16, "sliding_window": 128}, "spm"),
    # llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim), as the released sizes have it
    "gemma3": (
        "Gemma3TextConfig",
        {"head_dim": 16, "sliding_window": 128, "query_pre_attn_scalar": 16},
        "spm",
    ),
    # two more rows: Phi-3's <unk> and <|endoftext|>, which llama.cpp looks up by name for it
    "phi3": ("Phi3Config", {"pad_token_id": 1, "vocab_size": VOCAB + 2}, "bpe"),
}
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _sentencepiece_tokenizer(out_dir: Path) -> dict[str, int]:
    """A Gemma-style SentencePiece BPE (pad 0, eos 1, bos 2, unk 3) and its HF files."""
    import sentencepiece as spm
    from transformers import GemmaTokenizerFast

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_text().splitlines()),
        model_writer=model,
        vocab_size=VOCAB,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        add_dummy_prefix=False,
        minloglevel=2,
        num_threads=1,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = GemmaTokenizerFast(vocab_file=str(out_dir / "tokenizer.model"))  # type: ignore[no-untyped-call]
    tokenizer.chat_template = _GEMMA_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def _bpe_tokenizer(out_dir: Path, family: str) -> dict[str, int]:
    tokenizer = save_hf_tokenizer(train_tokenizer(VOCAB), out_dir, CONTEXT)
    if family == "phi3":  # Phi-4's layout: a Phi3ForCausalLM with a GPT-2 style tokenizer
        tokenizer.add_special_tokens({"unk_token": "<unk>"})
        tokenizer.add_tokens(["<|endoftext|>"], special_tokens=True)
        tokenizer.save_pretrained(str(out_dir))
        config_file = out_dir / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "GPT2Tokenizer"
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return {
        "bos_token_id": int(tokenizer.convert_tokens_to_ids(BOS_TOKEN)),
        "eos_token_id": int(tokenizer.convert_tokens_to_ids(EOS_TOKEN)),
    }


def write_family_checkpoint(family: str, out_dir: Path, seed: int = 1234) -> Path:
    """Write a random-weight checkpoint of `family` (config, safetensors, tokenizer) to out_dir."""
    import torch
    import transformers

    class_name, extra, kind = FAMILIES[family]
    out_dir.mkdir(parents=True, exist_ok=True)
    specials = (
        _sentencepiece_tokenizer(out_dir) if kind == "spm" else _bpe_tokenizer(out_dir, family)
    )
    config = getattr(transformers, class_name)(**{**_SHAPE, **extra, **specials})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    model.generation_config.eos_token_id = specials["eos_token_id"]
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
