"""A Hugging Face `tokenizer.json` for the engines that run their own loop (ORT, TensorRT)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.errors import EngineUnavailable, ModelLoadError

TOKENIZER_FILE = "tokenizer.json"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, reversed (char -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def find_tokenizer(model_path: Path) -> Path:
    """tokenizer.json next to the model, or one folder up (the model directory)."""
    folder = model_path if model_path.is_dir() else model_path.parent
    for candidate in (folder / TOKENIZER_FILE, folder.parent / TOKENIZER_FILE):
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"no {TOKENIZER_FILE} in {folder} or {folder.parent}")


class HFTokenizer:
    """Encodes prompts and maps each token id to its exact bytes for streaming."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EngineUnavailable("the `tokenizers` package is not installed") from exc
        try:
            self._tok = Tokenizer.from_file(str(path))
            spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ModelLoadError(f"cannot read tokenizer {path}: {exc}") from exc
        self._special = {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
        self._bytes = self._byte_table(spec)
        self.eos_ids = self._eos_ids(path.parent)

    def encode(self, text: str) -> list[int]:
        """Token ids for the prompt, special tokens added as the tokenizer's template says."""
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: list[int]) -> str:
        """Text for token ids, special tokens skipped."""
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token stands for (empty for special tokens)."""
        if 0 <= token_id < len(self._bytes):
            return self._bytes[token_id]
        return b""

    def _byte_table(self, spec: dict[str, Any]) -> list[bytes]:
        size = self._tok.get_vocab_size(with_added_tokens=True)
        decoder = json.dumps(spec.get("decoder") or {})
        byte_level = '"ByteLevel"' in decoder
        table: list[bytes] = []
        alphabet = _byte_level_alphabet()
        for token_id in range(size):
            piece = self._tok.id_to_token(token_id)
            if piece is None or token_id in self._special:
                table.append(b"")
            elif byte_level:
                table.append(bytes(alphabet.get(ch, 0x3F) for ch in piece))
            elif (match := _BYTE_TOKEN.match(piece)) is not None:
                table.append(bytes([int(match.group(1), 16)]))
            else:  # SentencePiece-style: '▁' marks a space
                table.append(piece.replace("\u2581", " ").encode("utf-8"))
        return table

    def _eos_ids(self, folder: Path) -> frozenset[int]:
        ids: set[int] = set()
        for name in ("generation_config.json", "config.json"):
            file = folder / name
            if file.is_file():
                value = json.loads(file.read_text(encoding="utf-8")).get("eos_token_id")
                if isinstance(value, int):
                    ids.add(value)
                elif isinstance(value, list):
                    ids.update(int(v) for v in value)
        if not ids:
            for piece in ("</s>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "<eos>"):
                token_id = self._tok.token_to_id(piece)
                if token_id is not None:
                    ids.add(token_id)
        return frozenset(int(i) for i in ids)
