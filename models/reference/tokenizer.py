"""A byte-level BPE tokenizer trained on the shipped corpus, with ChatML-style chat markers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

BOS_TOKEN = "<s>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "</s>"
SPECIAL_TOKENS = (BOS_TOKEN, PAD_TOKEN, "<|im_start|>", EOS_TOKEN)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus_text() -> str:
    """The training text: the shipped prose plus generated records (numbers widen the vocab)."""
    prose = resources.files("models.reference").joinpath("corpus.txt").read_text(encoding="utf-8")
    records = [
        f"Record {i}: the device reported {(i * 37) % 1000} tokens in {i % 60} seconds."
        for i in range(800)
    ]
    return prose + "\n".join(records) + "\n"


def train_tokenizer(vocab_size: int) -> Any:
    """Train a byte-level BPE `tokenizers.Tokenizer`; deterministic for a given corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().splitlines(), trainer)
    return tokenizer


def save_hf_tokenizer(tokenizer: Any, out_dir: Path, context_length: int) -> Any:
    """Write tokenizer.json and tokenizer_config.json (with the chat template); return it."""
    from transformers import PreTrainedTokenizerFast

    hf_tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=context_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    hf_tokenizer.save_pretrained(str(out_dir))
    return hf_tokenizer
