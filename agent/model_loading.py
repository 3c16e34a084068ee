"""Opening a model: a model directory (manifest -> selected variant -> engine) or a bare .gguf."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.chat import CHATML_TEMPLATE
from agent.engines.base import Engine, LoadOptions
from agent.errors import ModelLoadError
from agent.generation import FairQueue
from models.manifest import MANIFEST_FILE, Manifest

EngineFactory = Callable[[str], Engine]
GGUF_MAGIC = b"GGUF"
_WHAT_TO_PASS = "pass a model directory from `edgefleet-agent models list` or a .gguf file"


@dataclass
class LoadedModel:
    """A model whose engine has loaded one variant."""

    name: str
    path: Path
    variant_id: str
    engine_name: str
    engine: Engine
    manifest: Manifest | None = None
    device: str = "CPU"
    load_seconds: float = 0.0
    selection: Any = None
    explanation: str = ""
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    queue: FairQueue = field(default_factory=FairQueue)

    @property
    def ref(self) -> str:
        """`name:version` for a manifest model, the file stem for a bare .gguf."""
        return self.manifest.ref if self.manifest else self.name

    @property
    def aliases(self) -> set[str]:
        """Every name a client may use for this model."""
        return {self.name, self.ref, f"{self.name}:latest"}

    @property
    def chat_template(self) -> str:
        """The manifest's template, or ChatML for a bare .gguf."""
        return self.manifest.chat_template if self.manifest else CHATML_TEMPLATE

    @property
    def bos_token(self) -> str | None:
        """The BOS token text, when the manifest names one."""
        return self.manifest.tokenizer.bos_token if self.manifest else None

    @property
    def eos_token(self) -> str | None:
        """The EOS token text, when the manifest names one."""
        return self.manifest.tokenizer.eos_token if self.manifest else "<|im_end|>"


def _default_factory(name: str) -> Engine:
    from agent.engines.registry import create_engine

    return create_engine(name)


def check_model_files(path: Path) -> None:
    """Raise ModelLoadError unless `path` looks loadable: a .gguf file or a model directory."""
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist; {_WHAT_TO_PASS}")
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise ModelLoadError(
                f"{path} is neither a model directory (it has no {MANIFEST_FILE}) "
                f"nor a .gguf file; {_WHAT_TO_PASS}"
            )
        return
    if path.suffix != ".gguf":
        raise ModelLoadError(
            f"{path} is neither a model directory nor a .gguf file; {_WHAT_TO_PASS}"
        )
    try:
        with path.open("rb") as file:
            magic = file.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF model (it does not start with the GGUF header): the file is "
            "corrupt or truncated; download or export it again"
        )


def open_model(
    path: Path,
    *,
    profile: dict[str, Any],
    installed: dict[str, str],
    prefer: str | None = None,
    options: LoadOptions | None = None,
    engine_factory: EngineFactory | None = None,
    benchmark_results: Path | None = None,
) -> LoadedModel:
    """Load a model directory (manifest -> selected variant) or a bare .gguf. Blocking.

    With `benchmark_results` (a JSON file) and no `prefer`, the accepted candidates are timed
    once per model and hardware and the fastest is loaded.
    """
    factory = engine_factory or _default_factory
    base = options or LoadOptions()
    path = path.expanduser()
    check_model_files(path)
    started = time.perf_counter()
    if path.is_file():
        engine = factory(prefer or "llamacpp")
        engine.load(path, base)
        return LoadedModel(
            name=path.stem.lower(),
            path=path,
            variant_id="gguf",
            engine_name=engine.name,
            engine=engine,
            device=base.device,
            load_seconds=time.perf_counter() - started,
            explanation=f"{path.name} is a bare .gguf file: {engine.name} with the ChatML template",
        )
    from agent.selection import explain, select_variant, variant_path

    manifest = Manifest.load(path)
    selection = select_variant(manifest, profile, installed, prefer=prefer)
    if benchmark_results is not None and prefer is None:
        from agent.engine_benchmark import benchmark_model

        selection = benchmark_model(
            selection, path, manifest, profile=profile, results=benchmark_results,
            options=base, engine_factory=factory,
        )  # fmt: skip
    variant = manifest.variant(selection.variant_id)
    engine = factory(selection.engine)
    opts = replace(base, context_length=manifest.context_length, device=selection.device)
    engine.load(variant_path(path, variant), opts)
    return LoadedModel(
        name=manifest.name,
        path=path,
        variant_id=variant.id,
        engine_name=selection.engine,
        engine=engine,
        manifest=manifest,
        device=selection.device,
        load_seconds=time.perf_counter() - started,
        selection=selection,
        explanation=explain(selection),
    )


def probe_profile() -> dict[str, Any]:
    """This device's hardware profile as the JSON dict selection reads."""
    from hwprobe.probe import probe

    profile: dict[str, Any] = probe().model_dump(mode="json")
    return profile


def installed_engines() -> dict[str, str]:
    """Engines importable here (name -> version)."""
    from agent.engines import registry

    return registry.installed_engines()
