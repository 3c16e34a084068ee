"""openvino-genai's ContinuousBatchingPipeline driven directly: what the library does alone.

`bench/concurrency.py --engine openvino` runs this next to the agent, in the same run, on the
same model directory, with the agent's own scheduler config (`scheduler_config`), threads and
prompts (the model's chat template through genai's tokenizer): N requests added at once, then
`step()` until all finish, reading every handle after each step, as `OpenVinoBatchDriver`
does, minus HTTP, detokenizing and stop strings, and with the agent's CPU math (batch-invariant
f32 unless `--cpu-defaults`). Its rows have the same keys as a server's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from agent.engines.openvino import BATCH_INVARIANT_CPU
from agent.engines.openvino_process import scheduler_config

NAME = "openvino-genai direct"


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class DirectPipeline:
    """One ContinuousBatchingPipeline on CPU with the agent's scheduler config."""

    def __init__(self, model: Path, *, threads: int, slots: int, batch_invariant: bool) -> None:
        import openvino_genai as genai

        self._genai = genai
        properties: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if batch_invariant:  # the CPU math the agent runs by default
            properties.update(BATCH_INVARIANT_CPU)
        self._pipe = genai.ContinuousBatchingPipeline(
            str(model), scheduler_config(genai, slots), "CPU", properties
        )
        self._tokenizer = self._pipe.get_tokenizer()
        self._eos = int(self._pipe.get_config().eos_token_id)
        self._ids = 0

    def prompt(self, messages: list[dict[str, str]]) -> Any:
        """The token-id tensor of a chat, templated like the agent's."""
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self._tokenizer.encode(text, add_special_tokens=False).input_ids

    def round(self, prompts: Sequence[Any], tokens: int) -> dict[str, float]:
        """Add every prompt at once, step until all finish; the same figures as a server round."""
        config = self._genai.GenerationConfig()
        config.max_new_tokens = tokens
        config.do_sample = False
        config.eos_token_id = self._eos
        cpu = psutil.Process()
        before = sum(cpu.cpu_times()[:2])
        started = time.perf_counter()
        handles = []
        for ids in prompts:
            self._ids += 1
            handles.append(self._pipe.add_request(self._ids, ids, config))
        first = [0.0] * len(handles)
        last = [0.0] * len(handles)
        counts = [0] * len(handles)
        while self._pipe.has_non_finished_requests():
            self._pipe.step()
            now = time.perf_counter()
            for i, handle in enumerate(handles):
                if handle.can_read():
                    new = sum(len(o.generated_ids) for o in handle.read().values())
                    if new:
                        counts[i] += new
                        first[i] = first[i] or now
                        last[i] = now
        wall = time.perf_counter() - started
        used = sum(cpu.cpu_times()[:2]) - before
        per_stream = [
            (n - 1) / (b - a) for n, a, b in zip(counts, first, last, strict=True) if b > a
        ]
        ttfts = [f - started for f in first if f]
        total = sum(counts)
        return {
            "clients": len(prompts),
            "tokens": total,
            "failed": sum(1 for n in counts if n == 0),
            "aggregate": total / wall,
            "per_stream": statistics.mean(per_stream) if per_stream else 0.0,
            "ttft_p50": _percentile(ttfts, 0.5),
            "ttft_p99": _percentile(ttfts, 0.99),
            "cpu_ms_per_token": 1000 * used / max(total, 1),
        }


def run_direct(
    model: Path,
    *,
    clients: Sequence[int],
    tokens: int,
    threads: int,
    slots: int,
    batch_invariant: bool,
    messages: Callable[[int], list[dict[str, str]]],
    report: Callable[[str], None],
) -> dict[str, Any]:
    """Every concurrency level through the pipeline directly, after a short warm-up."""
    direct = DirectPipeline(model, threads=threads, slots=slots, batch_invariant=batch_invariant)
    direct.round([direct.prompt(messages(0))], 8)  # warm-up
    rounds = []
    for n in clients:
        rounds.append(direct.round([direct.prompt(messages(i)) for i in range(n)], tokens))
        report(f"  {NAME} {n} clients: {rounds[-1]['aggregate']:.1f} tok/s aggregate")
    return {"server": NAME, "rounds": rounds, "turns": None}
