"""`edgefleet-agent models list | import | pull | rm`: the local model store."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from agent.cli.common import CliError, echo, settings_from
from agent.config import AgentSettings
from agent.model_loading import probe_profile

_LOGGER = logging.getLogger(__name__)


def _store(settings: AgentSettings) -> Any:
    from models.store import ArtifactStore

    return ArtifactStore(settings.data_dir / "store")


def _trusted(args: argparse.Namespace) -> Any:
    from models.keys import load_public_keys

    if args.trust:
        return load_public_keys(args.trust)
    _LOGGER.warning(
        "no --trust key given: the signature is checked against the key inside manifest.sig, "
        "which proves the files are intact but not who published them; pass --trust PUBKEY"
    )
    return None


def cmd_models(args: argparse.Namespace) -> int:
    """models list | import DIR | pull URL | rm NAME:VERSION."""
    settings = settings_from(args)
    store = _store(settings)
    if args.models_command == "list":
        refs = store.list_models()
        for ref in refs:
            echo(f"{ref.name}:{ref.version}")
        if not refs:
            echo(f"no models in {settings.data_dir / 'store'}", err=True)
    elif args.models_command == "import":
        manifest = store.import_model_dir(Path(args.directory), _trusted(args))
        echo(f"imported {manifest.ref}")
    elif args.models_command == "pull":
        _pull(store, args.url, _trusted(args), settings, all_variants=args.all_variants)
    elif args.models_command == "rm":
        name, _, version = args.model.partition(":")
        if not version:
            raise CliError("name the version to remove: NAME:VERSION")
        store.remove(name, version)
        echo(f"removed {name}:{version}")
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
        selection = select_variant(manifest, probe_profile(), installed_engines())
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
    echo(f"pulled {manifest.ref} ({', '.join(v.id for v in variants)})")
