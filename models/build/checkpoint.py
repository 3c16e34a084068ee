"""Read what the converters need from a Hugging Face checkpoint directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.build.errors import BuildError

# The families edge users run; each converts to GGUF (llama.cpp), OpenVINO and ONNX (optimum).
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
)
# Texts that end a turn when the tokenizer has them as added tokens (as llama.cpp does).
END_OF_TURN_TEXTS = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|return|>",
    "<|end_of_text|>",
    "<EOT>",
    "<|END_OF_TURN_TOKEN|>",
)
# What a runtime reads next to exported weights: the configs and the Hugging Face tokenizer.
RUNTIME_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """The shape, tokenizer and chat template of a checkpoint, as the manifest needs them."""

    hf_dir: Path
    config: dict[str, Any]
    tokenizer_json: dict[str, Any]
    tokenizer_config: dict[str, Any]
    chat_template: str | None
    generation_config: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> int:
        """Number of transformer blocks."""
        return int(self.config["num_hidden_layers"])

    @property
    def heads(self) -> int:
        """Number of attention (query) heads."""
        return int(self.config["num_attention_heads"])

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (fewer than `heads` under GQA)."""
        return int(self.config.get("num_key_value_heads") or self.heads)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.heads)

    @property
    def context_length(self) -> int:
        """Default (and maximum) context length."""
        return int(self.config["max_position_embeddings"])

    def token_id(self, token: str | None) -> int | None:
        """The id of a special token in tokenizer.json, or None."""
        if token is None:
            return None
        for added in self.tokenizer_json.get("added_tokens", []):
            if added["content"] == token:
                return int(added["id"])
        vocab = self.tokenizer_json["model"].get("vocab") or {}
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...] by id
            return next((i for i, (piece, _) in enumerate(vocab) if piece == token), None)
        found = vocab.get(token)
        return None if found is None else int(found)

    def token_text(self, token_id: int) -> str | None:
        """The text of a token id (added tokens first, then the vocab), or None."""
        for added in self.tokenizer_json.get("added_tokens", []):
            if int(added["id"]) == token_id:
                return str(added["content"])
        vocab = self.tokenizer_json["model"].get("vocab") or {}
        if isinstance(vocab, list):
            return str(vocab[token_id][0]) if 0 <= token_id < len(vocab) else None
        return next((str(t) for t, i in vocab.items() if i == token_id), None)

    def stop_tokens(self) -> list[tuple[str, int]]:
        """(text, id) of eos, generation_config's eos ids, then end-of-turn added tokens."""
        eos_ids = self.generation_config.get("eos_token_id")
        ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
        found: list[tuple[str, int]] = []
        eos = self.special_token("eos_token")
        eos_id = self.token_id(eos)
        if eos is not None and eos_id is not None:
            found.append((eos, eos_id))
        for token_id in ids:
            text = self.token_text(token_id) if isinstance(token_id, int) else None
            if isinstance(token_id, int) and text is not None:
                found.append((text, token_id))
        added = {
            str(a["content"]): int(a["id"]) for a in self.tokenizer_json.get("added_tokens", [])
        }
        found += [(t, added[t]) for t in END_OF_TURN_TEXTS if t in added]
        return list(dict.fromkeys(found))

    def special_token(self, key: str) -> str | None:
        """`bos_token` / `eos_token` from tokenizer_config.json (string or AddedToken dict)."""
        value = self.tokenizer_config.get(key)
        if isinstance(value, dict):
            return str(value["content"])
        return None if value is None else str(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read {path}: {exc}; is this a Hugging Face model dir?") from exc
    return data


def read_checkpoint(hf_dir: Path) -> CheckpointInfo:
    """Load config, tokenizer and chat template; refuse architectures we cannot convert."""
    config = _read_json(hf_dir / "config.json")
    archs = config.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise BuildError(
            f"{hf_dir} is {archs or 'an unknown architecture'}; only "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} checkpoints can be converted"
        )
    tokenizer_config = _read_json(hf_dir / "tokenizer_config.json")
    template = tokenizer_config.get("chat_template")
    jinja_file = hf_dir / "chat_template.jinja"
    if not template and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    if not isinstance(template, str) or not template.strip():
        template = None  # a base model: the manifest says so and chat falls back explicitly
    generation = hf_dir / "generation_config.json"
    return CheckpointInfo(
        hf_dir=hf_dir,
        config=config,
        tokenizer_json=_read_json(hf_dir / "tokenizer.json"),
        tokenizer_config=tokenizer_config,
        chat_template=template,
        generation_config=_read_json(generation) if generation.is_file() else {},
    )


def copy_runtime_files(hf_dir: Path, out_dir: Path) -> None:
    """Copy the checkpoint's RUNTIME_FILES that exist into `out_dir`."""
    for name in RUNTIME_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, out_dir / name)
