"""`edgefleet-agent probe | explain | run | bench`: look at this device and use a model here."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.cli.common import (
    benchmark_results,
    echo,
    resolve_model,
    settings_from,
    with_progress,
)
from agent.config import AgentSettings
from agent.engines.base import Completion, SamplingParams, TokenChunk
from agent.errors import AgentError
from agent.model_loading import LoadedModel, open_model, probe_profile
from hwprobe.profile import HardwareProfile


def cmd_probe(args: argparse.Namespace) -> int:
    """Print the hardware profile."""
    from hwprobe.__main__ import summary
    from hwprobe.probe import probe

    profile = probe()
    echo(profile.model_dump_json(indent=2) if args.json else summary(profile))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the variant/engine selection and every candidate's reason."""
    from agent.engines.registry import create_engine, installed_engines
    from agent.selection import explain, select_variant
    from models.manifest import MANIFEST_FILE, Manifest

    settings = settings_from(args, benchmark_engines=args.benchmark_engines, parallel=args.parallel)
    path = resolve_model(args.model, settings, args.engine)
    if not (path / MANIFEST_FILE).is_file():
        options = settings.load_options()
        echo(_explain_gguf(path, probe_profile(), options.context_length))
        echo(_slots(path, options.context_length, settings.parallel))
        return 0
    manifest, profile = Manifest.load(path), probe_profile()
    selection = select_variant(manifest, profile, installed_engines(), prefer=args.engine)
    results = benchmark_results(settings)
    if results is not None and args.engine is None:
        from agent.engine_benchmark import benchmark_model

        selection = with_progress(
            f"benchmarking the candidates of {manifest.ref}",
            lambda: benchmark_model(
                selection,
                path,
                manifest,
                profile=profile,
                results=results,
                options=settings.load_options(),
                engine_factory=create_engine,
            ),
        )
    echo(explain(selection))
    if selection.engine == "llamacpp":
        from agent.engines.llamacpp import find_gguf
        from agent.selection import variant_path

        gguf = find_gguf(variant_path(path, manifest.variant(selection.variant_id)))
        echo(_slots(gguf, manifest.context_length, settings.parallel))
    return 0


def _slots(gguf: Path, context_length: int, parallel: int) -> str:
    """How many sequences llama.cpp would serve at once, each with `context_length` tokens."""
    from agent.engines.sizing import describe_slots, probed_available_memory

    return describe_slots(
        gguf,
        context_length=context_length,
        requested=parallel,
        available_bytes=probed_available_memory(),
    )


def _explain_gguf(path: Path, profile: HardwareProfile, context_length: int) -> str:
    """Where llama.cpp would run a bare .gguf and which chat template it would use."""
    from agent.engines.offload import GGUFHeaderError, model_shape, plan_offload, read_metadata
    from agent.selection import engine_device, engine_runtime, gpu_memory_budget

    device = engine_device("llamacpp", profile)
    runtime = engine_runtime("llamacpp", profile)
    gpu_devices = [d.lower() for d in (runtime.devices if runtime and runtime.devices else [])]
    try:
        template = read_metadata(path).get("tokenizer.chat_template")
        plan = plan_offload(
            model_shape(path),
            context_length=context_length,
            supports_gpu_offload="gpu" in gpu_devices,
            gpu_memory_bytes=gpu_memory_budget("llamacpp", device, profile),
        )
    except (GGUFHeaderError, OSError) as exc:
        return f"{path.name}: a bare .gguf file whose header cannot be read ({exc})"
    chat = (
        "its own chat template"
        if template
        else "no chat template: chat uses a named fallback chosen from its vocabulary at load"
    )
    where = f"served by llamacpp on {plan.device} ({plan.reason})"
    return f"{path.name}: a bare .gguf file, {where}; {chat}"


def _open(args: argparse.Namespace, settings: AgentSettings, prefer: str | None) -> LoadedModel:
    from agent.engines.registry import installed_engines

    path = resolve_model(args.model, settings, prefer)
    return with_progress(
        f"loading {path.name}",
        lambda: open_model(
            path,
            profile=probe_profile(),
            installed=installed_engines(),
            prefer=prefer,
            options=settings.load_options(),
            benchmark_results=benchmark_results(settings),
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Generate for one prompt, streamed to stdout; timing on stderr."""
    settings = settings_from(args)
    model = _open(args, settings, args.engine)
    stops: tuple[str, ...] = ()
    if args.raw:
        prompt = args.prompt
    else:
        prompt = model.chat.render([{"role": "user", "content": args.prompt}])
        stops = model.chat.stop_strings
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed, stop=stops
    )
    started = time.perf_counter()
    done: Completion | None = None
    try:
        for item in model.engine.generate(prompt, params):
            if isinstance(item, TokenChunk):
                sys.stdout.write(item.text)
                sys.stdout.flush()
            else:
                done = item
    finally:
        model.engine.unload()
    elapsed = time.perf_counter() - started
    echo()
    if done is not None:
        rate = done.completion_tokens / elapsed if elapsed else 0.0
        echo(
            f"[{model.variant_id} on {model.engine_name}: {done.completion_tokens} tokens, "
            f"{rate:.1f} tok/s, {done.finish_reason}]",
            err=True,
        )
    return 0


def _measure(work: Callable[[], float], what: str) -> str:
    try:
        return f"{with_progress(f'measuring {what}', work):.1f} tok/s"
    except AgentError as exc:
        return f"failed: {exc}"


def cmd_bench(args: argparse.Namespace) -> int:
    """Tokens/s of every candidate engine for this model on this device."""
    from agent.engine_benchmark import BenchmarkRun, candidate_measure, measure_tokens_per_s
    from agent.engines.registry import create_engine, installed_engines
    from agent.selection import select_variant
    from models.manifest import MANIFEST_FILE, Manifest

    settings = settings_from(args)
    path = resolve_model(args.model, settings)
    run = BenchmarkRun(prompt=args.prompt, tokens=args.tokens)
    options = settings.load_options()
    rows: list[tuple[str, str, str]] = []
    if (path / MANIFEST_FILE).is_file():
        manifest = Manifest.load(path)
        selection = select_variant(manifest, probe_profile(), installed_engines())
        measure = candidate_measure(
            path, manifest, options=options, engine_factory=create_engine, run=run
        )
        for c in (c for c in selection.candidates if c.accepted):
            rate = _measure(functools.partial(measure, c), f"{c.variant_id} on {c.engine}")
            rows.append((c.variant_id, c.engine, rate))
            echo(f"{c.variant_id:<16} {c.engine:<12} {rate}")
    else:
        rate = _measure(
            lambda: measure_tokens_per_s(create_engine("llamacpp"), path, options, run),
            f"{path.name} on llamacpp",
        )
        rows.append(("gguf", "llamacpp", rate))
        echo(f"{'gguf':<16} {'llamacpp':<12} {rate}")
    return 0 if rows else 1
