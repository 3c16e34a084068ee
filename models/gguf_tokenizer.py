"""Make a checkpoint dequantized from a GGUF carry the tokenizer its GGUF describes.

transformers' GGUF import gets a few things wrong that matter downstream: it saves the .gguf
itself as `tokenizer.model`, adds BOS when the GGUF says not to, names the wrong EOS for
SmolLM2, and marks a byte-level BPE as byte-fallback. llama.cpp's converter and optimum read
those files, so they are rewritten from the GGUF's own metadata; a SentencePiece vocabulary
(Gemma) gets a real `tokenizer.model` built from the GGUF's pieces, scores and types.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from models.gguf_metadata import read_metadata

_LOGGER = logging.getLogger(__name__)

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentencepiece(path: Path, fields: dict[str, Any]) -> None:
    """A SentencePiece model with the GGUF's pieces, scores and token types (same numbering)."""
    from sentencepiece import sentencepiece_model_pb2

    spm: Any = sentencepiece_model_pb2  # generated protobuf code: no static attributes

    model = spm.ModelProto()
    tokens = fields.get("tokenizer.ggml.tokens") or []
    scores = fields.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    for text, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = text, float(score), int(kind)
    model.trainer_spec.model_type = spm.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    for key, attr in (("unknown", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id")):
        token_id = fields.get(f"tokenizer.ggml.{key}_token_id")
        setattr(model.trainer_spec, attr, -1 if token_id is None else int(token_id))
    pad = fields.get("tokenizer.ggml.padding_token_id")
    model.trainer_spec.pad_id = -1 if pad is None else int(pad)
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix"))
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    path.write_bytes(model.SerializeToString())


def repair_tokenizer(checkpoint: Path, gguf_file: Path) -> None:
    """Rewrite the checkpoint's tokenizer files and special token ids from the GGUF."""
    fields = read_metadata(gguf_file).fields
    kind = fields.get("tokenizer.ggml.model")
    tokens: list[str] = fields.get("tokenizer.ggml.tokens") or []
    bos_id = fields.get("tokenizer.ggml.bos_token_id")
    eos_id = fields.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(fields.get("tokenizer.ggml.add_bos_token"))
    bos = tokens[bos_id] if bos_id is not None else None
    eos = tokens[eos_id] if eos_id is not None else None

    spm_file = checkpoint / "tokenizer.model"
    if spm_file.is_file() and spm_file.read_bytes()[:4] == b"GGUF":
        spm_file.unlink()  # the .gguf itself, saved as if it were a SentencePiece model
    config = _read_json(checkpoint / "tokenizer_config.json")
    config.update(bos_token=bos, eos_token=eos, add_bos_token=add_bos, add_eos_token=False)
    for stale in ("bos_token_id", "eos_token_id"):
        config.pop(stale, None)
    if kind == "gpt2":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(checkpoint / "tokenizer_config.json", config)

    if kind == "llama":  # SentencePiece: transformers' tokenizer.json splits words wrongly
        _write_sentencepiece(spm_file, fields)
        (checkpoint / "tokenizer.json").unlink(missing_ok=True)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))  # type: ignore[no-untyped-call]
        tokenizer.save_pretrained(str(checkpoint))  # tokenizer.json converted from the model
    elif kind == "gpt2":
        tok = _read_json(checkpoint / "tokenizer.json")
        tok["model"]["byte_fallback"] = False
        tok["decoder"] = {**_BYTE_LEVEL, "add_prefix_space": True, "trim_offsets": True}
        tok["post_processor"] = {**_BYTE_LEVEL, "use_regex": True}
        if add_bos and bos is not None:
            first = {"SpecialToken": {"id": bos, "type_id": 0}}
            seq_a = {"Sequence": {"id": "A", "type_id": 0}}
            seq_b = {"Sequence": {"id": "B", "type_id": 1}}
            tok["post_processor"] = {
                "type": "TemplateProcessing",
                "single": [first, seq_a],
                "pair": [first, seq_a, seq_b],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
            }
        _write_json(checkpoint / "tokenizer.json", tok)

    specials = _read_json(checkpoint / "special_tokens_map.json")
    specials.update(bos_token=bos, eos_token=eos)
    _write_json(checkpoint / "special_tokens_map.json", specials)
    for name in ("config.json", "generation_config.json"):
        data = _read_json(checkpoint / name)
        if data:
            data.update(bos_token_id=bos_id, eos_token_id=eos_id)
            _write_json(checkpoint / name, data)
    _LOGGER.info(
        "tokenizer of %s set from %s (%s, bos %s, eos %s)", checkpoint, gguf_file, kind, bos, eos
    )
