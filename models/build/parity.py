"""Do the built variants run the same model? Teacher-forced top-1 agreement against transformers.

Every engine gets the same token ids (the Hugging Face tokenizer's) and returns the logits at
every position; the truth is transformers in fp32 on the checkpoint. Agreement is the share of
positions where an engine's top-1 next token equals the truth's. A factual prompt is answered
by greedy decoding through each engine's own logits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.manifest import Manifest

_LOGGER = logging.getLogger(__name__)

Logits = Callable[[list[int]], Any]  # token ids -> numpy array [positions, vocab]
# (prompt, a word the answer must contain): plain completions that transformers answers right
# on both real models. Gemma 3 270M base completes "The capital of France is" with " the
# capital of the", SmolLM2 "Water is made of hydrogen and" with " helium": not used.
QUESTIONS = (
    ("The capital of Japan is", "Tokyo"),
    ("The chemical symbol for gold is", "Au"),
    ("The opposite of hot is", "cold"),
)
ANSWER_TOKENS = 4


@dataclass(frozen=True)
class EngineParity:
    """One engine's figures on one model."""

    engine: str
    agreement: float
    positions: int
    answers: dict[str, str]


def transformers_logits(hf_dir: Path) -> Logits:
    """The truth: transformers, fp32, one forward pass over the whole sequence."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]

    def logits(ids: list[int]) -> Any:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    return logits


def llamacpp_logits(gguf_file: Path, n_ctx: int = 1024) -> Logits:
    """llama.cpp through llama-cpp-python, logits at every position."""
    import llama_cpp
    import numpy as np

    from models.llamacpp_amx import avoid_faulting_amx

    avoid_faulting_amx(llama_cpp, gguf_file)
    llm = llama_cpp.Llama(
        str(gguf_file), n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False
    )

    def logits(ids: list[int]) -> Any:
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(ids)
        return np.asarray(llm.scores[: len(ids)], dtype=np.float32)

    return logits


def onnxruntime_logits(onnx_dir: Path) -> Logits:
    """ONNX Runtime on the optimum decoder, empty KV cache, the whole sequence at once."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    past = [i for i in inputs if i.name.startswith("past_key_values.")]

    def logits(ids: list[int]) -> Any:
        n = len(ids)
        feeds: dict[str, Any] = {"input_ids": np.array([ids], np.int64)}
        names = {i.name for i in inputs}
        if "attention_mask" in names:
            feeds["attention_mask"] = np.ones((1, n), np.int64)
        if "position_ids" in names:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        for i in past:
            feeds[i.name] = np.zeros((1, int(i.shape[1]), 0, int(i.shape[3])), np.float32)
        return session.run(["logits"], feeds)[0][0]

    return logits


def openvino_logits(ir_dir: Path) -> Logits:
    """OpenVINO runtime on the stateful IR (what openvino-genai runs), state reset per call."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(ir_dir / "openvino_model.xml"), "CPU")
    request = compiled.create_infer_request()
    names = {i.get_any_name() for i in compiled.inputs}

    def logits(ids: list[int]) -> Any:
        n = len(ids)
        request.reset_state()
        feeds: dict[str, Any] = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, n), np.int64),
        }
        if "position_ids" in names:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        if "beam_idx" in names:
            feeds["beam_idx"] = np.zeros((1,), np.int32)
        request.infer(feeds)
        return np.array(request.get_tensor("logits").data[0], dtype=np.float32)

    return logits


def variant_logits(model_dir: Path, variant_id: str) -> Logits:
    """The logits function for one built variant of a signed model directory."""
    variant = Manifest.load(model_dir).variant(variant_id)
    first = model_dir / variant.files[0].path
    if variant.format == "gguf":
        return llamacpp_logits(first)
    if variant.format == "onnx":
        return onnxruntime_logits(first.parent)
    return openvino_logits(first.parent)


def greedy_answer(logits: Logits, tokenizer: Any, prompt: str) -> str:
    """ANSWER_TOKENS greedy tokens after `prompt`, decoded (no KV cache: engine-neutral)."""
    ids: list[int] = tokenizer(prompt)["input_ids"]
    start = len(ids)
    for _ in range(ANSWER_TOKENS):
        ids.append(int(logits(ids)[-1].argmax()))
    return str(tokenizer.decode(ids[start:], skip_special_tokens=True))


def text_ids(tokenizer: Any, text_file: Path, limit: int = 512) -> list[int]:
    """The text's token ids (with BOS when the tokenizer adds one), at most `limit`."""
    ids: list[int] = tokenizer(text_file.read_text(encoding="utf-8"))["input_ids"]
    return ids[:limit]


def measure(
    hf_dir: Path, model_dir: Path, variant_ids: list[str], text_file: Path
) -> list[EngineParity]:
    """Agreement and answers of transformers (first, agreement 1.0) and each variant."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))  # type: ignore[no-untyped-call]
    ids = text_ids(tokenizer, text_file)
    truth = transformers_logits(hf_dir)
    want = truth(ids).argmax(-1)
    rows = [
        EngineParity(
            "transformers-fp32",
            1.0,
            len(ids),
            {q: greedy_answer(truth, tokenizer, q) for q, _ in QUESTIONS},
        )
    ]
    for variant_id in variant_ids:
        logits = variant_logits(model_dir, variant_id)
        got = logits(ids).argmax(-1)
        rows.append(
            EngineParity(
                variant_id,
                float(np.mean(got == want)),
                len(ids),
                {q: greedy_answer(logits, tokenizer, q) for q, _ in QUESTIONS},
            )
        )
        _LOGGER.info("%s: agreement %.3f", variant_id, rows[-1].agreement)
    return rows


def wrong_answers(row: EngineParity) -> list[str]:
    """The questions this engine answered without the expected word."""
    return [
        f"{q!r} -> {row.answers[q]!r} (want {word})"
        for q, word in QUESTIONS
        if word.lower() not in row.answers[q].lower()
    ]


def as_json(rows: list[EngineParity]) -> str:
    """The rows as JSON, for logs and notes."""
    return json.dumps([row.__dict__ for row in rows], indent=2)
