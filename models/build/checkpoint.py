"""Read what the converters need from a Hugging Face Llama-family checkpoint directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.build.errors import BuildError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


@dataclass(frozen=True)
class CheckpointInfo:
    """The shape, tokenizer and chat template of a checkpoint, as the manifest needs them."""

    hf_dir: Path
    config: dict[str, Any]
    tokenizer_json: dict[str, Any]
    tokenizer_config: dict[str, Any]
    chat_template: str

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
        vocab: dict[str, int] = self.tokenizer_json["model"]["vocab"]
        return vocab.get(token)

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
    if not isinstance(template, str) or not template:
        raise BuildError(f"{hf_dir} has no chat template; add `chat_template` to tokenizer_config")
    return CheckpointInfo(
        hf_dir=hf_dir,
        config=config,
        tokenizer_json=_read_json(hf_dir / "tokenizer.json"),
        tokenizer_config=tokenizer_config,
        chat_template=template,
    )
