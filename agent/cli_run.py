"""`edgefleet-agent probe | explain | run | bench`: look at this device and use a model here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.cli_common import echo, load_options, resolve_model, settings_from, with_progress
from agent.config import AgentSettings
from agent.engines.base import Completion, Engine, LoadOptions, SamplingParams, TokenChunk
from agent.errors import AgentError
from agent.model_loading import probe_profile
from agent.runtime import LoadedModel, open_model


def cmd_probe(args: argparse.Namespace) -> int:
    """Print the hardware profile."""
    from hwprobe.__main__ import summary
    from hwprobe.probe import probe

    profile = probe()
    echo(profile.model_dump_json(indent=2) if args.json else summary(profile))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the variant/engine selection and every candidate's reason."""
    from agent.engines.registry import installed_engines
    from agent.selection import explain, select_variant
    from models.manifest import MANIFEST_FILE, Manifest

    settings = settings_from(args)
    path = resolve_model(args.model, settings, args.engine)
    if not (path / MANIFEST_FILE).is_file():
        echo(f"{path.name}: a bare .gguf file, served by llamacpp with the ChatML template")
        return 0
    selection = select_variant(
        Manifest.load(path), probe_profile(), installed_engines(), prefer=args.engine
    )
    echo(explain(selection))
    return 0


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
            options=load_options(settings),
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Generate for one prompt, streamed to stdout; timing on stderr."""
    from agent.chat import chat_stop_strings, render_chat

    settings = settings_from(args)
    model = _open(args, settings, args.engine)
    template = model.chat_template
    stops: tuple[str, ...] = ()
    if args.raw:
        prompt = args.prompt
    else:
        turn = [{"role": "user", "content": args.prompt}]
        prompt = render_chat(template, turn, bos_token=model.bos_token, eos_token=model.eos_token)
        stops = chat_stop_strings(template, model.eos_token)
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


def _loader(engine: Engine, files: Path, options: LoadOptions) -> Callable[[], None]:
    return lambda: engine.load(files, options)


def cmd_bench(args: argparse.Namespace) -> int:
    """Tokens/s of every candidate engine for this model on this device."""
    from agent.engines.registry import create_engine, installed_engines
    from agent.selection import select_variant, variant_path
    from models.manifest import MANIFEST_FILE, Manifest

    settings = settings_from(args)
    path = resolve_model(args.model, settings)
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
    rows: list[tuple[str, str, str]] = []
    if (path / MANIFEST_FILE).is_file():
        manifest = Manifest.load(path)
        selection = select_variant(manifest, probe_profile(), installed_engines())
        pairs = [
            (c.variant_id, c.engine, c.device, variant_path(path, manifest.variant(c.variant_id)))
            for c in selection.candidates
            if c.accepted
        ]
        context = manifest.context_length
    else:
        pairs, context = [("gguf", "llamacpp", "CPU", path)], load_options(settings).context_length
    for variant_id, engine_name, device, files in pairs:
        try:
            engine = create_engine(engine_name)
            opts = LoadOptions(context_length=context, device=device, threads=settings.threads)
            with_progress(f"loading {variant_id} on {engine_name}", _loader(engine, files, opts))
            started = time.perf_counter()
            done = [i for i in engine.generate(args.prompt, params) if isinstance(i, Completion)]
            elapsed = time.perf_counter() - started
            engine.unload()
            rate = f"{done[-1].completion_tokens / elapsed:.1f} tok/s" if done else "no output"
        except AgentError as exc:
            rate = f"failed: {exc}"
        rows.append((variant_id, engine_name, rate))
        echo(f"{variant_id:<16} {engine_name:<12} {rate}")
    return 0 if rows else 1
