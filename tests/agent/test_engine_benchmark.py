"""Timing candidate engines on the real tiny reference model, and where the result shows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.engine_benchmark import BenchmarkRun, benchmark_model
from agent.engines.base import Engine, LoadOptions
from agent.engines.registry import create_engine, installed_engines
from agent.errors import ModelLoadError
from agent.model_loading import open_model
from agent.runtime import ModelRuntime
from agent.selection import Selection, select_variant, variant_path
from agent.server.ollama_models import ShowRequest, show
from hwprobe.profile import HardwareProfile
from models.manifest import Manifest

GIB = 1 << 30
CPU_ENGINES = ("llamacpp", "openvino", "onnxruntime")


def cpu_profile() -> HardwareProfile:
    """A fixed x86 CPU profile listing the CPU engines installed here, best first."""
    installed = installed_engines()
    engines = [e for e in CPU_ENGINES if e in installed]
    if not engines:
        pytest.skip("no CPU engine installed")
    return HardwareProfile.model_validate(
        {
            "cpu": {"arch": "x86_64"},
            "memory": {"total_bytes": 16 * GIB, "available_bytes": 16 * GIB},
            "device_class": "cpu-x86",
            "engines": engines,
            "accelerators": [],
        }
    )


class CountingFactory:
    """create_engine, counting the engines built (one per measurement or load)."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, name: str) -> Engine:
        self.built.append(name)
        return create_engine(name)


def run_benchmark(model_dir: Path, results: Path, factory: CountingFactory) -> Selection:
    profile = cpu_profile()
    manifest = Manifest.load(model_dir)
    selection = select_variant(manifest, profile, installed_engines())
    return benchmark_model(
        selection,
        model_dir,
        manifest,
        profile=profile,
        results=results,
        options=LoadOptions(threads=1),
        engine_factory=factory,
    )


def main_file(model_dir: Path, manifest: Manifest, variant_id: str) -> Path:
    """The file an engine opens first: the .gguf or .onnx, or the IR's XML."""
    target = variant_path(model_dir, manifest.variant(variant_id))
    return target / "openvino_model.xml" if target.is_dir() else target


def test_benchmark_picks_an_accepted_candidate_and_reuses_the_cache(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    results = tmp_path / "engine-benchmarks.json"
    factory = CountingFactory()
    chosen = run_benchmark(tiny_model_dir, results, factory)
    accepted = {(c.variant_id, c.engine) for c in chosen.candidates if c.accepted}
    assert chosen.decided_by == "benchmark"
    assert (chosen.variant_id, chosen.engine) in accepted
    measured = len(factory.built)
    assert 1 <= measured <= 3
    cached = json.loads(results.read_text())
    [key] = cached
    version = json.loads((tiny_model_dir / "manifest.json").read_text())["version"]
    assert key == f"edgefleet-ref-tiny:{version}|{cpu_profile().digest()}"
    assert cached[key]["tokens_per_s"] == chosen.tokens_per_s
    assert all(rate > 0 for rate in chosen.tokens_per_s.values())

    again = run_benchmark(tiny_model_dir, results, factory)
    assert len(factory.built) == measured  # nothing loaded: the figures came from the file
    assert (again.variant_id, again.engine, again.tokens_per_s) == (
        chosen.variant_id,
        chosen.engine,
        chosen.tokens_per_s,
    )


def test_a_candidate_that_fails_to_load_loses(tiny_model_copy: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(tiny_model_copy)
    static = select_variant(manifest, cpu_profile(), installed_engines())
    if sum(c.accepted for c in static.candidates) < 2:
        pytest.skip("needs two accepted candidates")
    # Corrupt the statically first candidate: its engine refuses to load it.
    main_file(tiny_model_copy, manifest, static.variant_id).write_bytes(b"GGUF" + b"\xff" * 64)

    chosen = run_benchmark(tiny_model_copy, tmp_path / "bench.json", CountingFactory())
    loser = f"{static.variant_id}/{static.engine}"
    assert chosen.decided_by == "benchmark"
    assert (chosen.variant_id, chosen.engine) != (static.variant_id, static.engine)
    assert loser not in chosen.tokens_per_s and chosen.tokens_per_s


def test_open_model_benchmarks_and_show_reports_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "engine-benchmarks.json"
    loaded = open_model(
        tiny_model_dir,
        profile=cpu_profile(),
        installed=installed_engines(),
        options=LoadOptions(threads=1),
        benchmark_results=results,
    )
    runtime = ModelRuntime()
    try:
        runtime.load_with(lambda: loaded)
        shown = asyncio.run(show(ShowRequest(model=loaded.ref), runtime))["edgefleet"]
    finally:
        runtime.unload()
    assert shown["decided_by"] == "benchmark" and results.is_file()
    assert shown["tokens_per_s"] and (shown["variant"], shown["engine"]) == (
        loaded.selection.variant_id,
        loaded.selection.engine,
    )
    assert "chosen by benchmark" in shown["explanation"] and "tok/s]" in shown["explanation"]


def test_a_forced_engine_is_not_benchmarked(tiny_model_dir: Path, tmp_path: Path) -> None:
    profile = cpu_profile()
    results = tmp_path / "engine-benchmarks.json"
    loaded = open_model(
        tiny_model_dir,
        profile=profile,
        installed=installed_engines(),
        prefer=profile.engines[-1],
        benchmark_results=results,
    )
    loaded.engine.unload()
    assert loaded.selection.decided_by == "configuration" and not results.exists()


def test_a_missing_variant_raises_before_any_engine_is_built(
    tiny_model_copy: Path, tmp_path: Path
) -> None:
    from agent.engine_benchmark import candidate_measure

    manifest = Manifest.load(tiny_model_copy)
    static = select_variant(manifest, cpu_profile(), installed_engines())
    main_file(tiny_model_copy, manifest, static.variant_id).unlink()
    factory = CountingFactory()
    measure = candidate_measure(
        tiny_model_copy,
        manifest,
        options=LoadOptions(),
        engine_factory=factory,
        run=BenchmarkRun(tokens=4, warmup_tokens=0),
    )
    with pytest.raises(ModelLoadError, match="not on disk"):
        measure(static.candidates[0])
    assert factory.built == []
