"""`edgefleet-agent`: serve a model locally, probe the hardware, manage models, run and compare."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent import __version__
from agent.config import AgentSettings, ConfigError, load_settings
from agent.engines.base import Completion, Engine, LoadOptions, SamplingParams, TokenChunk
from agent.errors import AgentError
from agent.runtime import LoadedModel, ModelRuntime, open_model, parse_keep_alive
from hwprobe.errors import ProbeError
from models.errors import ModelsError

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _settings(args: argparse.Namespace, **overrides: Any) -> AgentSettings:
    try:
        return load_settings(args.config, **overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _load_options(settings: AgentSettings) -> LoadOptions:
    return LoadOptions(
        context_length=settings.context_length or LoadOptions.context_length,
        threads=settings.threads,
        cache_dir=settings.data_dir / "cache",
    )


def _with_progress(description: str, work: Callable[[], T]) -> T:
    """Run blocking `work` in a thread while a tqdm bar on stderr shows elapsed time."""
    from tqdm import tqdm

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    with tqdm(desc=description, bar_format="{desc}: {elapsed}", file=sys.stderr) as bar:
        while thread.is_alive():
            thread.join(0.1)
            bar.refresh()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def _probe_dict() -> dict[str, Any]:
    from hwprobe.probe import probe

    profile: dict[str, Any] = probe().model_dump(mode="json")
    return profile


def resolve_model(spec: str, settings: AgentSettings, prefer: str | None = None) -> Path:
    """A path as given, or `name[:version]` from the store laid out under the data dir."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    from agent.engines.registry import installed_engines
    from agent.selection import select_variant
    from agent.slots import slot_key
    from models.store import ArtifactStore

    store = ArtifactStore(settings.data_dir / "store")
    name, _, version = spec.partition(":")
    versions = [r.version for r in store.list_models() if r.name == name]
    if not versions:
        raise CliError(f"{spec} is neither a path nor a model in the store; see `models list`")
    version = version if version and version != "latest" else versions[-1]
    manifest = store.manifest(name, version)
    selection = select_variant(manifest, _probe_dict(), installed_engines(), prefer=prefer)
    dest = settings.data_dir / "models" / slot_key(name, version, selection.variant_id)
    if not dest.is_dir():
        store.materialize(manifest, selection.variant_id, dest)
    return dest


# -- serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model (local fallback), or hand over to the fleet daemon."""
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        model_path=args.model,
        engine=args.engine,
        control_plane_url=args.control_plane,
        keep_alive=args.keep_alive,
    )
    if settings.model_path is None and settings.control_plane_url:
        try:
            from agent import daemon  # type: ignore[attr-defined,unused-ignore]
        except ImportError as exc:
            raise CliError(
                "fleet mode (--control-plane) needs agent.daemon, which this build lacks; "
                "serve a local model with --model PATH"
            ) from exc
        daemon.run(settings)
        return 0
    from agent.server.app import create_app
    from agent.server.serve import serve

    try:
        keep_alive = parse_keep_alive(settings.keep_alive)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    runtime = ModelRuntime(max_waiting=settings.queue_depth, keep_alive=keep_alive)
    app = create_app(runtime, api_key=settings.api_key)
    model_path = settings.model_path

    async def load() -> LoadedModel:
        assert model_path is not None
        path = await asyncio.to_thread(resolve_model, str(model_path), settings, settings.engine)
        return await runtime.load_model(
            path, prefer=settings.engine, options=_load_options(settings)
        )

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        _LOGGER.warning("serving on %s without an API key; set --api-key", settings.host)
    asyncio.run(
        serve(
            app,
            runtime,
            host=settings.host,
            port=settings.port,
            load=load if model_path is not None else None,
            log_level=settings.log_level,
        )
    )
    return 0


# -- probe / explain / run / bench -----------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    """Print the hardware profile."""
    from hwprobe.__main__ import summary
    from hwprobe.probe import probe

    profile = probe()
    print(profile.model_dump_json(indent=2) if args.json else summary(profile))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the variant/engine selection and every candidate's reason."""
    from agent.engines.registry import installed_engines
    from agent.selection import explain, select_variant
    from models.manifest import MANIFEST_FILE, Manifest

    settings = _settings(args)
    path = resolve_model(args.model, settings, args.engine)
    if not (path / MANIFEST_FILE).is_file():
        print(f"{path.name}: a bare .gguf file, served by llamacpp with the ChatML template")
        return 0
    selection = select_variant(
        Manifest.load(path), _probe_dict(), installed_engines(), prefer=args.engine
    )
    print(explain(selection))
    return 0


def _open(args: argparse.Namespace, settings: AgentSettings, prefer: str | None) -> LoadedModel:
    from agent.engines.registry import installed_engines

    path = resolve_model(args.model, settings, prefer)
    return _with_progress(
        f"loading {path.name}",
        lambda: open_model(
            path,
            profile=_probe_dict(),
            installed=installed_engines(),
            prefer=prefer,
            options=_load_options(settings),
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Generate for one prompt, streamed to stdout; timing on stderr."""
    from agent.chat import chat_stop_strings, render_chat

    settings = _settings(args)
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
    print()
    if done is not None:
        rate = done.completion_tokens / elapsed if elapsed else 0.0
        print(
            f"[{model.variant_id} on {model.engine_name}: {done.completion_tokens} tokens, "
            f"{rate:.1f} tok/s, {done.finish_reason}]",
            file=sys.stderr,
        )
    return 0


def _loader(engine: Engine, files: Path, options: LoadOptions) -> Callable[[], None]:
    return lambda: engine.load(files, options)


def cmd_bench(args: argparse.Namespace) -> int:
    """Tokens/s of every candidate engine for this model on this device."""
    from agent.engines.registry import create_engine, installed_engines
    from agent.selection import select_variant, variant_path
    from models.manifest import MANIFEST_FILE, Manifest

    settings = _settings(args)
    path = resolve_model(args.model, settings)
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
    rows: list[tuple[str, str, str]] = []
    if (path / MANIFEST_FILE).is_file():
        manifest = Manifest.load(path)
        selection = select_variant(manifest, _probe_dict(), installed_engines())
        pairs = [
            (c.variant_id, c.engine, c.device, variant_path(path, manifest.variant(c.variant_id)))
            for c in selection.candidates
            if c.accepted
        ]
        context = manifest.context_length
    else:
        pairs, context = [("gguf", "llamacpp", "CPU", path)], _load_options(settings).context_length
    for variant_id, engine_name, device, files in pairs:
        try:
            engine = create_engine(engine_name)
            opts = LoadOptions(context_length=context, device=device, threads=settings.threads)
            _with_progress(f"loading {variant_id} on {engine_name}", _loader(engine, files, opts))
            started = time.perf_counter()
            done = [i for i in engine.generate(args.prompt, params) if isinstance(i, Completion)]
            elapsed = time.perf_counter() - started
            engine.unload()
            rate = f"{done[-1].completion_tokens / elapsed:.1f} tok/s" if done else "no output"
        except AgentError as exc:
            rate = f"failed: {exc}"
        rows.append((variant_id, engine_name, rate))
        print(f"{variant_id:<16} {engine_name:<12} {rate}")
    return 0 if rows else 1


# -- models ----------------------------------------------------------------------------------
def _store(settings: AgentSettings) -> Any:
    from models.store import ArtifactStore

    return ArtifactStore(settings.data_dir / "store")


def _trusted(args: argparse.Namespace) -> Any:
    from models.signing import load_public_keys

    return load_public_keys(args.trust) if args.trust else None


def cmd_models(args: argparse.Namespace) -> int:
    """models list | import DIR | pull URL | rm NAME:VERSION."""
    settings = _settings(args)
    store = _store(settings)
    if args.models_command == "list":
        refs = store.list_models()
        for ref in refs:
            print(f"{ref.name}:{ref.version}")
        if not refs:
            print(f"no models in {settings.data_dir / 'store'}", file=sys.stderr)
    elif args.models_command == "import":
        manifest = store.import_model_dir(Path(args.directory), _trusted(args))
        print(f"imported {manifest.ref}")
    elif args.models_command == "pull":
        _pull(store, args.url, _trusted(args), settings, all_variants=args.all_variants)
    elif args.models_command == "rm":
        name, _, version = args.model.partition(":")
        if not version:
            raise CliError("name the version to remove: NAME:VERSION")
        store.remove(name, version)
        print(f"removed {name}:{version}")
    return 0


def _pull(
    store: Any, url: str, trusted: Any, settings: AgentSettings, *, all_variants: bool
) -> None:
    import httpx
    from tqdm import tqdm

    from agent.engines.registry import installed_engines
    from agent.selection import select_variant
    from models.manifest import SIGNATURE_FILE

    base = url.rsplit("/", 1)[0] + "/"

    def get(address: str) -> bytes:
        if "://" not in address or address.startswith("file://"):
            return Path(address.removeprefix("file://")).read_bytes()
        response = httpx.get(address, timeout=30.0, follow_redirects=True)
        response.raise_for_status()
        return response.content

    manifest = store.add_manifest(get(url), get(base + SIGNATURE_FILE), trusted)
    variants = manifest.variants
    if not all_variants:
        selection = select_variant(manifest, _probe_dict(), installed_engines())
        variants = [manifest.variant(selection.variant_id)]
    for variant in variants:
        for entry in variant.files:
            with tqdm(
                total=entry.size, unit="B", unit_scale=True, desc=entry.path, file=sys.stderr
            ) as bar:
                store.fetch(
                    base + entry.path,
                    entry.sha256,
                    entry.size,
                    progress=lambda done, total: bar.update(done - bar.n),
                )
    print(f"pulled {manifest.ref} ({', '.join(v.id for v in variants)})")


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, with help for every command and option."""
    fields = AgentSettings.model_fields

    def helptext(name: str) -> str:
        return f"{fields[name].description} (env EDGEFLEET_AGENT_{name.upper()})"

    parser = argparse.ArgumentParser(
        prog="edgefleet-agent",
        description="Run LLMs on this device: serve OpenAI/Ollama APIs, manage models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, help="config file (.toml or .json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a model on the local REST API (OpenAI + Ollama)")
    serve.add_argument("--model", type=Path, help=helptext("model_path"))
    serve.add_argument("--host", help=helptext("host"))
    serve.add_argument("--port", type=int, help=helptext("port"))
    serve.add_argument("--api-key", help=helptext("api_key"))
    serve.add_argument("--engine", help=helptext("engine"))
    serve.add_argument("--keep-alive", help=helptext("keep_alive"))
    serve.add_argument("--control-plane", metavar="URL", help=helptext("control_plane_url"))
    serve.set_defaults(func=cmd_serve)

    probe = sub.add_parser("probe", help="print this device's hardware profile")
    probe.add_argument("--json", action="store_true", help="the full profile as JSON")
    probe.set_defaults(func=cmd_probe)

    for name, func, text in (
        ("explain", cmd_explain, "show which variant and engine would run MODEL, and why"),
        ("run", cmd_run, "generate for one PROMPT with MODEL, streamed to the terminal"),
        ("bench", cmd_bench, "measure tokens/s of every candidate engine for MODEL"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("model", metavar="MODEL", help="model directory, .gguf, or NAME[:VER]")
        command.set_defaults(func=func)
        if name != "bench":
            command.add_argument("--engine", help="prefer this engine or variant id")
        if name == "run":
            command.add_argument("prompt", metavar="PROMPT")
            command.add_argument("--max-tokens", type=int, default=256)
            command.add_argument("--temperature", type=float, default=0.8)
            command.add_argument("--seed", type=int)
            command.add_argument("--raw", action="store_true", help="no chat template")
        if name == "bench":
            command.add_argument("--tokens", type=int, default=64, help="tokens per engine")
            command.add_argument("--prompt", default="Once upon a time")

    models = sub.add_parser("models", help="list, import, pull or remove stored models")
    models.set_defaults(func=cmd_models)
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="models in the store")
    imp = msub.add_parser("import", help="verify and import a signed model directory")
    imp.add_argument("directory")
    pull = msub.add_parser("pull", help="download a model by its manifest URL")
    pull.add_argument("url", help="URL (or path) of manifest.json; manifest.sig sits beside it")
    pull.add_argument("--all-variants", action="store_true", help="not only the one for here")
    for command in (imp, pull):
        command.add_argument("--trust", action="append", help="trusted public key file")
    rm = msub.add_parser("rm", help="remove NAME:VERSION")
    rm.add_argument("model")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except (CliError, AgentError, ModelsError, ProbeError) as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
