"""build_targets: targets, manifest contents, signatures and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from models.build.checkpoint import read_checkpoint
from models.build.errors import BuildError
from models.build.pipeline import build_targets, kv_cache_bytes
from models.build.targets import TARGETS
from models.keys import generate_key
from models.manifest import Manifest
from models.signing import verify_model_dir


def test_tiny_manifest_has_every_variant_signed(
    tiny_model_dir: Path, reference_key_public: Ed25519PublicKey
) -> None:
    manifest = verify_model_dir(tiny_model_dir, trusted=[reference_key_public])
    ids = {v.id for v in manifest.variants}
    assert {"gguf-f32", "openvino-int8", "openvino-fp32", "onnx-fp32", "onnx-trt-fp16"} <= ids
    assert manifest.context_length == 512
    assert manifest.tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>" in manifest.chat_template
    assert 100_000 < manifest.parameters < 1_000_000
    for variant in manifest.variants:
        assert "tokenizer.json" in {f.path for f in variant.files}
    trt, ort = manifest.variant("onnx-trt-fp16"), manifest.variant("onnx-fp32")
    assert trt.built_on_device and not ort.built_on_device
    assert trt.files == ort.files and trt.engines == ["tensorrt"]


def test_memory_is_weights_plus_kv_cache(tiny_model_dir: Path) -> None:
    manifest = Manifest.load(tiny_model_dir)
    info = read_checkpoint(tiny_model_dir / "hf")
    gguf = manifest.variant("gguf-f32")
    weights = (tiny_model_dir / "gguf" / "model-f32.gguf").stat().st_size
    # 2 (K and V) x 2 layers x 512 positions x 2 KV heads x 16 dims x 2 bytes (f16 cache)
    assert kv_cache_bytes(info, 2) == 2 * 2 * 512 * 2 * 16 * 2
    assert gguf.memory_bytes == weights + kv_cache_bytes(info, 2)


def test_build_one_target_into_a_fresh_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    key = generate_key()
    out = tmp_path / "out"
    manifest = build_targets(
        tiny_model_dir / "hf", out, ["gguf-f32"], key, name="t", version="7", progress=False
    ).manifest
    assert [v.id for v in manifest.variants] == ["gguf-f32"]
    assert verify_model_dir(out, trusted=[key.public_key()]).ref == "t:7"


def test_q4_build_leaves_no_f32_intermediate(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / "out"
    built = build_targets(tiny_model_dir / "hf", out, ["gguf-q4"], generate_key(), progress=False)
    manifest = built.manifest
    assert [v.id for v in manifest.variants] == ["gguf-q4_0"]
    assert sorted(p.name for p in (out / "gguf").iterdir()) == ["model-q4_0.gguf"]
    assert manifest.name == "hf" and manifest.version.startswith("sha-")


def test_unknown_target_names_the_choices(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="choose from gguf-q4"):
        build_targets(tiny_model_dir / "hf", tmp_path, ["tflite"], generate_key(), progress=False)


def test_non_llama_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(BuildError, match="only LlamaForCausalLM"):
        build_targets(tmp_path, tmp_path / "out", ["onnx"], generate_key(), progress=False)


def _failing_onnx(ctx: object) -> list[object]:
    (Path(ctx.out_dir) / "onnx").mkdir()  # type: ignore[attr-defined]  # half-written output
    raise BuildError("optimum could not trace the model")


def test_a_failing_target_stops_the_build_unsigned(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(TARGETS, "onnx", _failing_onnx)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="target onnx failed: optimum could not trace"):
        build_targets(
            tiny_model_dir / "hf", out, ["onnx", "gguf-f32"], generate_key(), progress=False
        )
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json"]  # no scratch, no onnx/


def test_keep_going_signs_what_built_and_names_what_did_not(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(TARGETS, "onnx", _failing_onnx)
    key, out = generate_key(), tmp_path / "out"
    result = build_targets(
        tiny_model_dir / "hf", out, ["onnx", "gguf-f32"], key, progress=False, keep_going=True
    )
    assert result.failed == {"onnx": "optimum could not trace the model"}
    assert [v.id for v in result.manifest.variants] == ["gguf-f32"]
    assert set(result.seconds) == {"onnx", "gguf-f32"}
    assert verify_model_dir(out, trusted=[key.public_key()]) == result.manifest
    assert sorted(p.name for p in out.iterdir()) == [
        "gguf",
        "manifest.json",
        "manifest.sig",
        "tokenizer.json",
    ]
