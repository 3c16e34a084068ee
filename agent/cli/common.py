"""What every `edgefleet-agent` subcommand shares: settings, model lookup, progress, output."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.config import AgentSettings, ConfigError, load_settings
from agent.model_loading import check_model_files, probe_profile

T = TypeVar("T")


def echo(text: str = "", *, err: bool = False) -> None:
    """Write one line for the user: stdout, or stderr for diagnostics."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def settings_from(args: argparse.Namespace, **overrides: Any) -> AgentSettings:
    """Settings from --config, the environment and the command's flags (`overrides`)."""
    try:
        return load_settings(args.config, **overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def benchmark_results(settings: AgentSettings) -> Path | None:
    """The engine benchmark cache when --benchmark-engines is on, else None (no benchmark)."""
    if not settings.benchmark_engines:
        return None
    from agent.engine_benchmark import results_file

    return results_file(settings.data_dir)


def with_progress(description: str, work: Callable[[], T]) -> T:
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


def looks_like_path(spec: str) -> bool:
    """Whether `spec` names a file or directory rather than `name[:version]` in the store."""
    return "/" in spec or spec.startswith(("~", ".")) or spec.endswith(".gguf")


def resolve_model(spec: str, settings: AgentSettings, prefer: str | None = None) -> Path:
    """A checked path as given, or `name[:version]` from the store laid out under the data dir.

    Raises CliError or ModelLoadError (missing path, not a model, not a GGUF file).
    """
    path = Path(spec).expanduser()
    if path.exists() or looks_like_path(spec):
        check_model_files(path)
        return path
    from agent.engines.registry import installed_engines
    from agent.fleet.slots import slot_key
    from agent.selection import select_variant
    from models.store import ArtifactStore

    store = ArtifactStore(settings.data_dir / "store")
    name, _, version = spec.partition(":")
    versions = [r.version for r in store.list_models() if r.name == name]
    if not versions:
        raise CliError(f"{spec} is neither a path nor a model in the store; see `models list`")
    version = version if version and version != "latest" else versions[-1]
    manifest = store.manifest(name, version)
    selection = select_variant(manifest, probe_profile(), installed_engines(), prefer=prefer)
    dest = settings.data_dir / "models" / slot_key(name, version, selection.variant_id)
    if not dest.is_dir():
        store.materialize(manifest, selection.variant_id, dest)
    return dest
