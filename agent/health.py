"""The rollout health check: a greedy smoke generation held to the manifest's budget, and
the rollout's quality probe (fixed prompts whose greedy answers must contain an expected text).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.engines.base import Completion, SamplingParams, TokenChunk
from agent.errors import AgentError
from agent.model_loading import LoadedModel
from models.manifest import HealthBudget
from models.protocol import ProbePrompt


@dataclass(frozen=True)
class HealthReport:
    """The smoke generation's numbers and whether they meet the manifest's budget."""

    ok: bool
    reason: str
    first_token_ms: float
    tokens_per_s: float
    tokens: int

    def as_dict(self) -> dict[str, float]:
        """The numbers, for the `active` event."""
        return {
            "first_token_ms": round(self.first_token_ms, 2),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "tokens": float(self.tokens),
        }


def smoke_test(loaded: LoadedModel) -> HealthReport:
    """Generate the manifest's health prompt greedily and hold it to the manifest's budget."""
    budget = loaded.manifest.health if loaded.manifest else HealthBudget()
    params = SamplingParams(max_tokens=budget.max_tokens, temperature=0.0, seed=0)
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        for item in loaded.engine.generate(budget.prompt, params):
            if isinstance(item, Completion):
                tokens = item.completion_tokens
            elif first is None:
                first = time.perf_counter()
    except AgentError as exc:
        return HealthReport(False, f"generation failed: {exc}", 0.0, 0.0, 0)
    ended = time.perf_counter()
    if first is None or tokens == 0:
        return HealthReport(False, "the model produced no tokens", 0.0, 0.0, 0)
    ttft_ms = (first - started) * 1000
    rest = ended - first
    tps = (tokens - 1) / rest if tokens > 1 and rest > 0 else tokens / max(ended - started, 1e-9)
    problems = []
    if ttft_ms > budget.max_first_token_ms:
        problems.append(f"first token after {ttft_ms:.0f} ms > {budget.max_first_token_ms:.0f} ms")
    if tps < budget.min_tokens_per_s:
        problems.append(f"{tps:.1f} tokens/s < {budget.min_tokens_per_s:.1f}")
    return HealthReport(not problems, "; ".join(problems), ttft_ms, tps, tokens)


def quality_probe(loaded: LoadedModel, prompts: Sequence[ProbePrompt]) -> str | None:
    """Why the model failed the probe (the first prompt answered wrongly), or None."""
    for probe in prompts:
        params = SamplingParams(max_tokens=probe.max_tokens, temperature=0.0, seed=0)
        try:
            answer = "".join(
                item.text
                for item in loaded.engine.generate(probe.prompt, params)
                if isinstance(item, TokenChunk)
            )
        except AgentError as exc:
            return f"quality probe: generation failed: {exc}"
        if probe.expect.strip().lower() not in answer.lower():
            return (
                f"quality probe: {probe.prompt[:60]!r} answered {answer.strip()[:80]!r}, "
                f"expected {probe.expect.strip()[:60]!r}"
            )
    return None
