"""Shared helpers for rollout tests: signed fake models, a fake variant picker, fake engines."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.engines.base import Engine
from agent.engines.fake import FakeBehaviour, FakeEngine
from models.manifest import FileEntry, HealthBudget, Manifest, Variant
from models.signing import write_signed_manifest

VARIANT = "gguf-q4_0"


def gguf_manifest(
    name: str,
    version: str,
    files: list[FileEntry],
    *,
    memory_bytes: int = 1 << 20,
    health: HealthBudget | None = None,
) -> Manifest:
    """A small chat model's manifest with one GGUF q4_0 variant for llama.cpp over `files`."""
    return Manifest(
        name=name,
        version=version,
        architecture="llama",
        context_length=256,
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        variants=[
            Variant(
                id=VARIANT,
                format="gguf",
                precision="q4_0",
                engines=["llamacpp"],
                files=files,
                memory_bytes=memory_bytes,
            )
        ],
        health=health or HealthBudget(),
    )


def publish_fake_model(
    root: Path,
    key: Ed25519PrivateKey,
    version: str,
    *,
    name: str = "tiny",
    healthy: bool = True,
    size: int = 4096,
    memory_bytes: int = 1 << 20,
) -> Path:
    """A signed model directory `root/name/version` whose one file a FakeEngine 'loads'."""
    model_dir = root / name / version
    model_dir.mkdir(parents=True, exist_ok=True)
    data = (f"{name}:{version}".encode() * (size // 8 + 1))[:size]
    (model_dir / "model.gguf").write_bytes(data)
    entry = FileEntry(path="model.gguf", sha256=hashlib.sha256(data).hexdigest(), size=size)
    manifest = gguf_manifest(
        name,
        version,
        [entry],
        memory_bytes=memory_bytes,
        health=HealthBudget() if healthy else HealthBudget(min_tokens_per_s=1e12),
    )
    write_signed_manifest(model_dir, manifest, key)
    return model_dir


@dataclass(frozen=True)
class FakeSelection:
    """What select_variant returns, for tests that do not probe hardware."""

    variant_id: str
    engine: str
    device: str = "CPU"


def pick_first(manifest: Manifest) -> FakeSelection:
    """Select the manifest's first variant on its first engine."""
    variant = manifest.variants[0]
    return FakeSelection(variant.id, variant.engines[0])


def fake_engines(behaviour: FakeBehaviour | None = None) -> FakeEngineFactory:
    """An engine factory that answers every engine name with a FakeEngine."""
    return FakeEngineFactory(behaviour or FakeBehaviour())


class FakeEngineFactory:
    """Creates FakeEngines and remembers them so tests can look at them."""

    def __init__(self, behaviour: FakeBehaviour) -> None:
        self.behaviour = behaviour
        self.created: list[FakeEngine] = []

    def __call__(self, name: str) -> Engine:
        engine = FakeEngine(self.behaviour)
        self.created.append(engine)
        return engine
