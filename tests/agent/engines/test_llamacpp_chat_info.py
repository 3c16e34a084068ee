"""What llama.cpp reads from real GGUFs for chat: template, BOS/EOS, end-of-turn tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.chat import KNOWN_SPECIALS
from agent.engines.base import LoadOptions
from agent.engines.llamacpp import LlamaCppEngine

pytest.importorskip("llama_cpp")


def test_smollm2_carries_chatml_and_ends_turns_on_im_end(smollm2_gguf: Path) -> None:
    engine = LlamaCppEngine()
    engine.load(smollm2_gguf, LoadOptions(context_length=256, threads=2))
    info = engine.chat_info(KNOWN_SPECIALS)
    assert info.template is not None and "<|im_start|>" in info.template
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_end|>" in info.end_of_turn and {"<|im_start|>", "<|im_end|>"} <= info.specials
    assert "<start_of_turn>" not in info.specials
    # The template writes <|im_start|> (the BOS text) itself: no second BOS is added.
    assert engine.count_tokens("<|im_start|>user") == engine.count_tokens("user") + 1
    engine.unload()


def test_gemma3_has_no_template_but_gemma_turn_tokens(gemma3_gguf: Path) -> None:
    engine = LlamaCppEngine()
    engine.load(gemma3_gguf, LoadOptions(context_length=256, threads=2))
    info = engine.chat_info(KNOWN_SPECIALS)
    assert info.template is None
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")
    assert {"<end_of_turn>", "<eos>"} <= set(info.end_of_turn)
    assert {"<start_of_turn>", "<end_of_turn>"} <= info.specials
    assert "<|im_start|>" not in info.specials
    # Gemma adds BOS, but not a second one in front of a template that writes it.
    assert engine.count_tokens("<bos>Hi") == engine.count_tokens("Hi")
    engine.unload()
