"""Timing a candidate engine on this device: the one measurement `bench` and selection share.

`measure_tokens_per_s` loads an engine, warms it up, times a short greedy generation and
unloads it. `benchmark_model` runs it over the accepted candidates of a selection through
`agent.selection.benchmark_candidates`, which keeps the fastest and caches the figures in
`<data_dir>/engine-benchmarks.json`, keyed by model ref and hardware digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.engines.base import Completion, Engine, LoadOptions, SamplingParams
from agent.errors import EngineError, ModelLoadError
from agent.selection import Candidate, Measure, Selection, benchmark_candidates, variant_path
from hwprobe import HardwareProfile
from models.manifest import Manifest

_LOGGER = logging.getLogger(__name__)

RESULTS_FILE = "engine-benchmarks.json"
BENCH_PROMPT = "Once upon a time"
BENCH_TOKENS = 32
WARMUP_TOKENS = 4


@dataclass(frozen=True)
class BenchmarkRun:
    """What one measurement generates: the prompt, timed tokens and warm-up tokens."""

    prompt: str = BENCH_PROMPT
    tokens: int = BENCH_TOKENS
    warmup_tokens: int = WARMUP_TOKENS


def results_file(data_dir: Path) -> Path:
    """Where measured tokens/s are kept for this agent."""
    return data_dir / RESULTS_FILE


def hardware_digest(hardware: Mapping[str, Any]) -> str:
    """hwprobe's digest (stable across restarts); a raw hash for a profile it cannot read."""
    try:
        return HardwareProfile.model_validate(hardware).digest()
    except ValidationError:
        return hashlib.sha256(json.dumps(hardware, sort_keys=True).encode()).hexdigest()[:16]


def _generate(engine: Engine, prompt: str, tokens: int) -> int:
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    done = [item for item in engine.generate(prompt, params) if isinstance(item, Completion)]
    return done[-1].completion_tokens if done else 0


def measure_tokens_per_s(
    engine: Engine, files: Path, options: LoadOptions, run: BenchmarkRun | None = None
) -> float:
    """Load `files`, warm up, time a greedy generation (wall clock), unload: tokens/s."""
    run = run or BenchmarkRun()
    engine.load(files, options)
    try:
        if run.warmup_tokens > 0:
            _generate(engine, run.prompt, run.warmup_tokens)
        started = time.perf_counter()
        produced = _generate(engine, run.prompt, run.tokens)
        elapsed = time.perf_counter() - started
    finally:
        engine.unload()
    if produced == 0 or elapsed <= 0:
        raise EngineError(f"{engine.name} produced no tokens for the benchmark prompt")
    return produced / elapsed


def candidate_measure(
    model_dir: Path,
    manifest: Manifest,
    *,
    options: LoadOptions,
    engine_factory: Callable[[str], Engine],
    run: BenchmarkRun | None = None,
) -> Measure:
    """A `measure` for benchmark_candidates: loads each candidate as open_model would."""

    def measure(candidate: Candidate) -> float:
        variant = manifest.variant(candidate.variant_id)
        missing = [f.path for f in variant.files if not (model_dir / f.path).exists()]
        if missing:
            raise ModelLoadError(
                f"variant {variant.id} is not on disk in {model_dir} (missing {missing[0]})"
            )
        opts = replace(options, context_length=manifest.context_length, device=candidate.device)
        engine = engine_factory(candidate.engine)
        return measure_tokens_per_s(engine, variant_path(model_dir, variant), opts, run)

    return measure


def benchmark_model(
    selection: Selection,
    model_dir: Path,
    manifest: Manifest,
    *,
    profile: HardwareProfile,
    results: Path,
    options: LoadOptions,
    engine_factory: Callable[[str], Engine],
) -> Selection:
    """The fastest accepted candidate of `selection` on this device, measured once and cached."""
    measure = candidate_measure(model_dir, manifest, options=options, engine_factory=engine_factory)

    def logged(candidate: Candidate) -> float:
        try:
            rate = measure(candidate)
        except Exception as exc:
            _LOGGER.warning(
                "benchmark of %s on %s failed: %s", candidate.variant_id, candidate.engine, exc
            )
            raise
        _LOGGER.info(
            "benchmark: %s on %s, %.1f tok/s", candidate.variant_id, candidate.engine, rate
        )
        return rate

    return benchmark_candidates(
        selection,
        hardware_digest=profile.digest(),
        results_file=results,
        measure=logged,
    )
