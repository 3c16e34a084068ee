"""The shared KV loop with a fake step function, and TensorRT's plan cache and profile."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.decoding import Sampler
from agent.engines.kvloop import Logits, token_steps
from agent.engines.tensorrt import (
    PREFILL_CHUNK,
    PlanKey,
    TensorRtEngine,
    cached_plan,
    file_sha256,
    plan_path,
    profile_shapes,
    store_plan,
)
from agent.errors import EngineError, ModelLoadError
from models.manifest import Manifest
from tests.agent.engines.kv_engines import FakeStepEngine


class CountingStepper:
    """A 'model' that always predicts the token after the last one it was fed."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.fed: list[list[int]] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def step(self, token_ids: Sequence[int]) -> Logits:
        self.fed.append(list(token_ids))
        logits = np.zeros(self.vocab, dtype=np.float32)
        logits[(token_ids[-1] + 1) % self.vocab] = 10.0
        return logits

    def close(self) -> None:
        pass


def test_token_steps_prefills_once_then_feeds_back_lazily() -> None:
    stepper = CountingStepper(50)
    steps = token_steps(stepper, [3, 4, 5], Sampler(SamplingParams(temperature=0.0)))
    assert [next(steps) for _ in range(3)] == [6, 7, 8]
    steps.close()
    assert stepper.fed == [[3, 4, 5], [6], [7]]
    assert stepper.resets == 1


def test_kvloop_engine_streams_text_with_a_fake_step(tiny_model_dir: Path) -> None:
    manifest = Manifest.load(tiny_model_dir)
    eos = manifest.tokenizer.eos_token_id
    assert eos is not None
    stepper = CountingStepper(eos)  # counts up and wraps before reaching the EOS id
    engine = FakeStepEngine(stepper)
    engine.load(tiny_model_dir / "onnx", LoadOptions(context_length=128))
    items = list(engine.generate("hello", SamplingParams(max_tokens=5, temperature=0.0)))
    done = items[-1]
    assert isinstance(done, Completion) and done.finish_reason == "length"
    ids = [i.token_id for i in items if isinstance(i, TokenChunk)]
    assert ids == [(stepper.fed[0][-1] + k) % eos for k in range(1, 6)]
    assert engine.stats().device == "GPU" and engine.stats().completion_tokens == 5
    engine.unload()
    with pytest.raises(EngineError):
        engine.count_tokens("x")


def test_plan_key_covers_gpu_version_and_model(tmp_path: Path) -> None:
    base = PlanKey("Orin", "8.7", "10.3.0", "a" * 64)
    others = [
        PlanKey("RTX 4090", "8.7", "10.3.0", "a" * 64),
        PlanKey("Orin", "8.9", "10.3.0", "a" * 64),
        PlanKey("Orin", "8.7", "10.4.0", "a" * 64),
        PlanKey("Orin", "8.7", "10.3.0", "b" * 64),
    ]
    assert len({base.digest(), *(k.digest() for k in others)}) == 5
    assert plan_path(tmp_path, base) == tmp_path / f"{base.digest()}.plan"
    assert base.digest() == PlanKey("Orin", "8.7", "10.3.0", "a" * 64).digest()


def test_plan_cache_decides_whether_to_build(tmp_path: Path) -> None:
    path = plan_path(tmp_path / "cache", PlanKey("g", "1.0", "10", "c" * 64))
    assert cached_plan(path) is None  # missing: build
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert cached_plan(path) is None  # truncated: rebuild
    store_plan(path, b"PLAN")
    assert cached_plan(path) == b"PLAN"
    assert list(path.parent.iterdir()) == [path]


def test_file_sha256(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_profile_shapes_are_dynamic_in_sequence_and_past() -> None:
    assert profile_shapes("input_ids", ("b", "s"), 512) == ((1, 1), (1, 1), (1, PREFILL_CHUNK))
    assert profile_shapes("attention_mask", ("b", "t"), 512) == ((1, 1), (1, 256), (1, 512))
    past = profile_shapes("past_key_values.3.value", ("b", 2, "p", 16), 512)
    assert past == ((1, 2, 0, 16), (1, 2, 256, 16), (1, 2, 511, 16))
    with pytest.raises(ModelLoadError):
        profile_shapes("cache_position", ("s",), 512)


def _cuda_present() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return importlib.util.find_spec("cuda") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_present(), reason="needs tensorrt and a CUDA device")
def test_tensorrt_builds_caches_and_generates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from agent.engines.onnxrt import OnnxRuntimeEngine

    onnx = tiny_model_dir / "onnx"
    options = LoadOptions(context_length=256, device="GPU", cache_dir=tmp_path)
    greedy = SamplingParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    trt = TensorRtEngine()
    trt.load(onnx, options)
    first = [i for i in trt.generate("Hello there", greedy) if isinstance(i, TokenChunk)]
    assert len(list(tmp_path.glob("*.plan"))) == 1
    trt.unload()
    trt.load(onnx, options)  # from the cache this time
    second = [i for i in trt.generate("Hello there", greedy) if isinstance(i, TokenChunk)]
    assert [c.token_id for c in first] == [c.token_id for c in second]
    ort = OnnxRuntimeEngine()
    ort.load(onnx, LoadOptions(context_length=256))
    ref = [i.token_id for i in ort.generate("Hello there", greedy) if isinstance(i, TokenChunk)]
    assert [c.token_id for c in first][:4] == ref[:4]  # FP16 may drift later
