"""A dedicated embedding GGUF listed in the manifest: the embedding routes use it, chat does not.

SmolLM2 (576-wide) is the chat model; Gemma 3 270M (640-wide) is the variant's
`embedding_file`, so the vector size shows which model embedded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.serve import RunningServer
from models.files import hash_file
from models.keys import generate_key
from models.manifest import MANIFEST_FILE, FileEntry, Manifest, Variant
from tests.agent.server.conftest import serve_model

pytest.importorskip("llama_cpp")
gguf_import = pytest.importorskip("models.build.gguf_import")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

EMBEDDING_FILE = "embed/gemma-3-270m.gguf"
SMOLLM2_WIDTH, GEMMA3_WIDTH = 576, 640


def with_embedding_file(model_dir: Path, gguf: Path) -> Manifest:
    """List `gguf` as the variant's embedding_file (a hard link in the model directory)."""
    manifest = Manifest.load(model_dir)
    target = model_dir / EMBEDDING_FILE
    target.parent.mkdir()
    os.link(gguf, target)
    sha256, size = hash_file(target)
    variant = manifest.variants[0]
    files = [*variant.files, FileEntry(path=EMBEDDING_FILE, sha256=sha256, size=size)]
    changed = variant.model_copy(update={"files": files, "embedding_file": EMBEDDING_FILE})
    manifest = Manifest.model_validate({**manifest.model_dump(), "variants": [changed]})
    (model_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(), encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def served(
    smollm2_gguf: Path, gemma3_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    model_dir = tmp_path_factory.mktemp("embedding-model") / "smollm2"
    gguf_import.import_gguf(smollm2_gguf, model_dir, generate_key(), hardlink=True)
    manifest = with_embedding_file(model_dir, gemma3_gguf)
    with serve_model(model_dir, parallel=1) as running:
        yield running, manifest.ref


def test_embeddings_come_from_the_manifests_embedding_file(
    served: tuple[RunningServer, str],
) -> None:
    server, model = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=300)
    reply = client.embeddings.create(model=model, input=["a cat", "tax law"])
    assert [len(d.embedding) for d in reply.data] == [GEMMA3_WIDTH, GEMMA3_WIDTH]
    assert abs(sum(x * x for x in reply.data[0].embedding) - 1.0) < 1e-3
    assert reply.usage.prompt_tokens > 2
    embedded = ollama.Client(host=server.url, timeout=300).embed(model=model, input="a cat")
    assert len(embedded.embeddings[0]) == GEMMA3_WIDTH
    chat = client.chat.completions.create(  # chat still runs on the chat model
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert chat.choices[0].message.content is not None


def test_without_the_field_embeddings_pool_the_chat_model(smollm2_openai: Any) -> None:
    reply = smollm2_openai.embeddings.create(input="a cat", model="")
    assert len(reply.data[0].embedding) == SMOLLM2_WIDTH


def test_the_field_names_one_of_the_variants_files_and_is_signed_only_when_set() -> None:
    entry = {"path": "gguf/m.gguf", "sha256": "0" * 64, "size": 1}
    base = {"id": "v", "format": "gguf", "precision": "q4_0", "engines": ["llamacpp"]}
    variant = {**base, "files": [entry], "memory_bytes": 1}
    with pytest.raises(ValueError, match="not in files"):
        Variant.model_validate({**variant, "embedding_file": "other.gguf"})
    head = {"name": "m", "version": "1", "architecture": "llama", "context_length": 8}
    plain = Manifest.model_validate({**head, "variants": [variant]})
    assert b"embedding_file" not in plain.canonical_bytes()  # old signatures still verify
    listed = {**variant, "embedding_file": "gguf/m.gguf"}
    assert (
        b"embedding_file"
        in Manifest.model_validate({**head, "variants": [listed]}).canonical_bytes()
    )
