"""Runs llama.cpp's convert_hf_to_gguf.py in a child process (`python llamacpp_runner.py DIR ...`).

DIR holds the converter (see models.build.llamacpp_source); the remaining arguments are the
converter's own. One change to its behaviour: a byte-level or SentencePiece-style BPE tokenizer
whose pre-tokenizer llama.cpp does not recognise by hash (one trained for a custom model) gets
the generic `gpt-2` / `default` pre-tokenizer with a warning, instead of stopping the build.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger("edgefleet.convert")


def _generic_pre_tokenizer(model_dir: Path) -> str:
    """`gpt-2` for a ByteLevel pre-tokenizer (GPT-2's split regex), else llama.cpp's default."""
    try:
        spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "default"
    return "gpt-2" if '"ByteLevel"' in json.dumps(spec.get("pre_tokenizer")) else "default"


def _patch_unknown_pre_tokenizer(base: Any) -> None:
    for cls in vars(base).values():
        if isinstance(cls, type) and "get_vocab_base_pre" in vars(cls):
            original = vars(cls)["get_vocab_base_pre"]

            def get_vocab_base_pre(self: Any, tokenizer: Any, _original: Any = original) -> str:
                try:
                    return str(_original(self, tokenizer))
                except NotImplementedError:
                    pre = _generic_pre_tokenizer(Path(self.dir_model))
                    _LOGGER.warning("unrecognised BPE pre-tokenizer; using llama.cpp's %r", pre)
                    return pre

            setattr(cls, "get_vocab_base_pre", get_vocab_base_pre)  # noqa: B010


def main() -> None:
    """Put the converter and its gguf-py first on sys.path, patch, and run its main()."""
    converter = Path(sys.argv[1]).resolve()
    sys.path[0] = str(converter)  # not this file's folder: its module names could shadow others
    sys.path.insert(1, str(converter / "gguf-py"))
    sys.argv = [str(converter / "convert_hf_to_gguf.py"), *sys.argv[2:]]
    import conversion.base  # type: ignore[import-not-found]
    import convert_hf_to_gguf  # type: ignore[import-not-found]

    _patch_unknown_pre_tokenizer(conversion.base)
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
