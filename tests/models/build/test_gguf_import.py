"""A real .gguf becomes a signed model directory: metadata into the manifest, file as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models import cli
from models.build.errors import BuildError
from models.build.gguf_import import import_gguf
from models.build.gguf_info import read_gguf
from models.files import hash_file
from models.keys import generate_key
from models.manifest import Manifest
from models.signing import verify_model_dir
from tests.support.llama import open_llama

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    """One signing key for the module."""
    return generate_key()


@pytest.fixture(scope="module")
def smollm2_dir(
    smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey
) -> Path:
    """SmolLM2's GGUF imported once (read-only)."""
    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(smollm2_gguf, out, key)
    return out


def test_smollm2_metadata_becomes_the_manifest(
    smollm2_dir: Path, smollm2_gguf: Path, key: Ed25519PrivateKey
) -> None:
    manifest = verify_model_dir(smollm2_dir, trusted=[key.public_key()])
    assert manifest.architecture == "llama"
    assert manifest.context_length == 8192
    assert manifest.name == "smollm2-135m-instruct"
    assert 130_000_000 < manifest.parameters < 140_000_000
    [variant] = manifest.variants
    assert (variant.id, variant.format, variant.precision) == ("gguf-q4_1", "gguf", "q4_1")
    assert variant.engines == ["llamacpp"]
    assert [f.path for f in variant.files] == ["gguf/model-q4_1.gguf"]
    assert variant.files[0].sha256 == hash_file(smollm2_gguf)[0]
    assert manifest.version == f"sha-{variant.files[0].sha256[:12]}"
    # 30 layers x 8192 positions x 3 KV heads x 64 dims, K and V, f16
    assert variant.memory_bytes == variant.size_bytes + 2 * 30 * 8192 * 3 * 64 * 2
    tok = manifest.tokenizer
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.stop_tokens[0] == "<|im_end|>" and "<|endoftext|>" in tok.stop_tokens
    assert len(tok.stop_tokens) == len(tok.stop_token_ids)
    assert manifest.chat_template is not None and "<|im_start|>" in manifest.chat_template


def test_gemma3_base_gets_no_chat_template(
    gemma3_gguf: Path, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    manifest = import_gguf(gemma3_gguf, tmp_path / "gemma", key, hardlink=True)
    assert manifest.architecture == "gemma3"
    assert manifest.chat_template is None
    assert manifest.context_length == 32768
    assert [v.id for v in manifest.variants] == ["gguf-q4_k_m"]
    assert (manifest.tokenizer.bos_token, manifest.tokenizer.eos_token) == ("<bos>", "<eos>")
    assert "<end_of_turn>" in manifest.tokenizer.stop_tokens
    assert (tmp_path / "gemma" / "gguf" / "model-q4_k_m.gguf").stat().st_ino == (
        gemma3_gguf.stat().st_ino
    )
    assert verify_model_dir(tmp_path / "gemma", trusted=[key.public_key()]) == manifest


def test_imported_model_is_selected_and_runs_on_llamacpp(smollm2_dir: Path) -> None:
    from agent.selection import variant_path

    manifest = Manifest.load(smollm2_dir)
    path = variant_path(smollm2_dir, manifest.variants[0])
    llm = open_llama(path, n_ctx=128, n_threads=2, verbose=False)
    out = llm.create_completion("The capital of France is", max_tokens=4, temperature=0.0)
    assert "Paris" in out["choices"][0]["text"]


def test_cli_builds_a_gguf_and_refuses_targets(
    smollm2_gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert cli.main(["build", str(smollm2_gguf), "--out", str(out), "--version", "1"]) == 0
    assert "built smollm2-135m-instruct:1: gguf-q4_1 (its chat template)" in capsys.readouterr().out
    assert cli.main(["verify", str(out)]) == 0
    argv = ["build", str(smollm2_gguf), "--out", str(out), "--targets", "onnx"]
    assert cli.main(argv) == 1
    assert "a .gguf is signed as it is" in capsys.readouterr().err


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(BuildError, match="not a readable GGUF"):
        read_gguf(bad)


def test_manifests_signed_before_stop_tokens_existed_still_verify(model_dir: Path) -> None:
    # The models fixture writes no stop tokens: the canonical bytes must not name them.
    canonical = json.loads(Manifest.load(model_dir).canonical_bytes())
    assert "stop_tokens" not in canonical["tokenizer"]
    assert verify_model_dir(model_dir).ref == "tiny-test:1.0"
