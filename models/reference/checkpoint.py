"""Deterministic Llama checkpoints in Hugging Face format: tiny (tests), mid and bench."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.reference.tokenizer import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    corpus_text,
    save_hf_tokenizer,
    train_tokenizer,
)

_LOGGER = logging.getLogger(__name__)

SEED = 1234


@dataclass(frozen=True)
class ReferenceSpec:
    """The shape of one reference model and how long to train it."""

    kind: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    train_steps: int


SPECS: dict[str, ReferenceSpec] = {
    # GQA (4 query heads over 2 KV heads) so every converter must handle it.
    "tiny": ReferenceSpec("tiny", 64, 192, 2, 4, 2, 512, 512, train_steps=300),
    # ~25M parameters; every dim a multiple of 256 so llama.cpp can use Q4_K_M.
    "mid": ReferenceSpec("mid", 512, 1536, 8, 8, 4, 2048, 2048, train_steps=0),
    # The serving-overhead benchmark's shape: 12 layers, 768 wide, 2,048-token vocab, Q4_0
    # (about 54 MB), the model the llama.cpp / llama-cpp-python figures in the notes used.
    "bench": ReferenceSpec("bench", 768, 2304, 12, 12, 12, 2048, 2048, train_steps=0),
}


def _train(model: Any, token_ids: list[int], steps: int) -> None:
    """A few hundred next-token steps on the corpus so greedy output is varied, not one token."""
    import torch

    data = torch.tensor(token_ids, dtype=torch.long)
    window, batch = 64, 16
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, data.numel() - window - 1, (batch,), generator=generator)
        inputs = torch.stack([data[s : s + window] for s in starts.tolist()])
        loss = model(input_ids=inputs, labels=inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            _LOGGER.info("reference training step %d/%d loss %.3f", step + 1, steps, loss.item())
    model.eval()


def write_checkpoint(kind: str, hf_dir: Path) -> None:
    """Create the `kind` reference model (weights, tokenizer, configs) in `hf_dir`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = SPECS[kind]
    hf_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab)
    hf_tokenizer = save_hf_tokenizer(tokenizer, hf_dir, spec.context)
    config = LlamaConfig(  # type: ignore[no-untyped-call]
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.context,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=hf_tokenizer.convert_tokens_to_ids(BOS_TOKEN),
        eos_token_id=hf_tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=hf_tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        torch_dtype="float32",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order, every run
    try:
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
        if spec.train_steps:
            _train(model, tokenizer.encode(corpus_text()).ids, spec.train_steps)
        else:
            # Untrained: zero the special tokens' output rows, so their logit is exactly 0 while
            # the max over ~2,000 random logits is positive: greedy never stops early on EOS.
            special = [hf_tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
            with torch.no_grad():
                model.lm_head.weight[special] = 0.0
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    _template_into_tokenizer_config(hf_dir)


def _template_into_tokenizer_config(hf_dir: Path) -> None:
    """Keep the chat template in tokenizer_config.json, where every loader looks for it."""
    config_file = hf_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (hf_dir / "chat_template.jinja").unlink(missing_ok=True)
