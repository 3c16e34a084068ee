"""Opening a model: a model directory (manifest -> selected variant -> engine) or a bare .gguf."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.chat import KNOWN_SPECIALS, ChatFormat, chat_format
from agent.engines.base import ChatInfoSource, Engine, LoadOptions, ModelChatInfo
from agent.errors import AgentError, ModelLoadError
from agent.generation import FairQueue
from agent.selection import (
    embedding_path,
    engine_device,
    explain,
    gpu_memory_budget,
    select_variant,
    variant_path,
)
from hwprobe.profile import HardwareProfile
from models.manifest import MANIFEST_FILE, Manifest, Variant

_LOGGER = logging.getLogger(__name__)
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
    copies: set[str] = field(default_factory=set)  # names given by Ollama's /api/copy

    @property
    def ref(self) -> str:
        """`name:version` for a manifest model, the file stem for a bare .gguf."""
        return self.manifest.ref if self.manifest else self.name

    @property
    def aliases(self) -> set[str]:
        """Every name a client may use for this model."""
        return {self.name, self.ref, f"{self.name}:latest", *self.copies}

    chat_format: ChatFormat | None = None

    def __post_init__(self) -> None:
        if self.chat_format is None:
            self.chat_format = resolve_chat_format(self.manifest, self.engine, self.name)

    @property
    def chat(self) -> ChatFormat:
        """How chat messages become this model's prompt, and where its turn ends."""
        assert self.chat_format is not None  # set in __post_init__
        return self.chat_format

    @property
    def chat_template(self) -> str:
        """The template chat uses: the model's own, or the named fallback."""
        return self.chat.template

    @property
    def bos_token(self) -> str | None:
        """The BOS token text, when the model names one."""
        return self.chat.bos_token

    @property
    def eos_token(self) -> str | None:
        """The EOS token text, when the model names one."""
        return self.chat.eos_token


def _engine_chat_info(engine: Engine) -> ModelChatInfo | None:
    if not isinstance(engine, ChatInfoSource):
        return None
    try:
        return engine.chat_info(KNOWN_SPECIALS)
    except AgentError as exc:
        _LOGGER.warning("%s could not read the model's chat metadata: %s", engine.name, exc)
        return None


def resolve_chat_format(manifest: Manifest | None, engine: Engine, name: str) -> ChatFormat:
    """The manifest's template, else the model file's, else a named fallback (logged)."""
    info = _engine_chat_info(engine)
    ends = info.end_of_turn if info else ()
    specials = info.specials if info else None
    if manifest is not None:
        tokenizer = manifest.tokenizer
        extra = tuple(str(t) for t in getattr(tokenizer, "stop_tokens", None) or ())
        found = chat_format(
            manifest.chat_template or (info.template if info else None),
            source="manifest" if manifest.chat_template else "gguf",
            bos_token=tokenizer.bos_token or (info.bos_token if info else None),
            eos_token=tokenizer.eos_token or (info.eos_token if info else None),
            end_of_turn=(*extra, *ends),
            specials=specials,
        )
    else:
        found = chat_format(
            info.template if info else None,
            source="gguf",
            bos_token=info.bos_token if info else None,
            eos_token=info.eos_token if info else None,
            end_of_turn=ends,
            specials=specials,
        )
    if found.is_fallback:
        _LOGGER.warning("model %s: chat uses the %s", name, found.describe())
    return found


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
    profile: HardwareProfile | None,
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
        engine_name = prefer or "llamacpp"
        device = engine_device(engine_name, profile) if profile else base.device
        budget = gpu_memory_budget(engine_name, device, profile) if profile else None
        opts = replace(base, gpu_memory_bytes=budget)
        engine = factory(engine_name)
        engine.load(path, opts)
        loaded = LoadedModel(
            name=path.stem.lower(),
            path=path,
            variant_id="gguf",
            engine_name=engine.name,
            engine=engine,
            device=engine.stats().device,
            load_seconds=time.perf_counter() - started,
        )
        loaded.explanation = (
            f"{path.name} is a bare .gguf file: {engine.name} on {loaded.device}"
            f"{_offload_note(engine)}; chat uses {loaded.chat.describe()}"
        )
        return loaded
    manifest = Manifest.load(path)
    profile = profile or probe_profile()
    selection = select_variant(manifest, profile, installed, prefer=prefer)
    if benchmark_results is not None and prefer is None:
        from agent.engine_benchmark import benchmark_model

        selection = benchmark_model(
            selection,
            path,
            manifest,
            profile=profile,
            results=benchmark_results,
            options=base,
            engine_factory=factory,
        )
    variant = manifest.variant(selection.variant_id)
    budget = gpu_memory_budget(selection.engine, selection.device, profile)
    options = replace(base, device=selection.device, gpu_memory_bytes=budget)
    engine = factory(selection.engine)
    loaded = load_variant(engine, selection.engine, path, manifest, variant, options, started)
    loaded.selection = selection
    loaded.explanation = explain(selection)
    note = _offload_note(loaded.engine)
    if loaded.device != selection.device or note:
        loaded.explanation += f"\n{selection.engine} runs on {loaded.device}{note}"
    return loaded


def load_variant(
    engine: Engine,
    engine_name: str,
    model_dir: Path,
    manifest: Manifest,
    variant: Variant,
    options: LoadOptions,
    started: float,
) -> LoadedModel:
    """Load one variant of a model directory into `engine` (named `engine_name`), blocking,
    with the manifest's context and the variant's embedding model; `started`: loading began."""
    engine.load(
        variant_path(model_dir, variant),
        replace(
            options,
            context_length=manifest.context_length,
            embedding_model=embedding_path(model_dir, variant),
        ),
    )
    return LoadedModel(
        name=manifest.name,
        path=model_dir,
        variant_id=variant.id,
        engine_name=engine_name,
        engine=engine,
        manifest=manifest,
        device=engine.stats().device or options.device,
        load_seconds=time.perf_counter() - started,
    )


def _offload_note(engine: Engine) -> str:
    """`: <why>` for an engine that decided how many layers go to the GPU, else ''."""
    why = engine.stats().extra.get("offload")
    return f" ({why})" if why else ""


def probe_profile() -> HardwareProfile:
    """This device's hardware profile, as selection reads it."""
    from hwprobe.probe import probe

    return probe()


def installed_engines() -> dict[str, str]:
    """Engines importable here (name -> version)."""
    from agent.engines import registry

    return registry.installed_engines()
