"""TensorRT FP16 engine: built on the device from the ONNX decoder, cached, run by kvloop.

The plan is cached under `LoadOptions.cache_dir` keyed by (GPU name and compute capability,
TensorRT version, sha256 of the ONNX file), since a plan only runs on the GPU and TensorRT
version that built it. KV-cache buffers are allocated once at full context and ping-ponged:
each step reads past_key_values.* from one set and writes present.* into the other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.engines.base import LoadOptions
from agent.engines.cudamem import CudaMemory, DeviceBuffer, open_cuda_memory
from agent.engines.kvloop import KVLoopEngine, Logits, Stepper, find_onnx
from agent.engines.registry import import_runtime
from agent.errors import EngineError, ModelLoadError
from models.files import hash_file

_LOGGER = logging.getLogger(__name__)
PREFILL_CHUNK = 256  # prompt tokens per TensorRT call; bounds the logits buffer and profile
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "edgefleet" / "tensorrt"
_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32}


@dataclass(frozen=True)
class PlanKey:
    """What a serialized plan depends on."""

    gpu: str
    compute_capability: str
    trt_version: str
    onnx_sha256: str

    def digest(self) -> str:
        """A filename-safe digest of the key."""
        raw = "|".join((self.gpu, self.compute_capability, self.trt_version, self.onnx_sha256))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    """sha256 of a file (and its external-data siblings are covered by the manifest)."""
    return hash_file(path)[0]


def plan_path(cache_dir: Path, key: PlanKey) -> Path:
    """Where the plan for this key lives."""
    return cache_dir / f"{key.digest()}.plan"


def cached_plan(path: Path) -> bytes | None:
    """The cached plan's bytes, or None when it must be built (missing or empty)."""
    if path.is_file() and path.stat().st_size > 0:
        return path.read_bytes()
    return None


def store_plan(path: Path, plan: bytes) -> None:
    """Write the plan atomically so a crash mid-write never leaves a truncated cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".plan.tmp")
    tmp.write_bytes(plan)
    tmp.replace(path)


def profile_shapes(
    name: str, shape: Sequence[int | str], context: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) for one decoder input; batch 1, dynamic sequence and past lengths."""
    if name in ("input_ids", "position_ids"):
        return (1, 1), (1, 1), (1, PREFILL_CHUNK)
    if name == "attention_mask":
        return (1, 1), (1, context // 2), (1, context)
    if name.startswith("past_key_values."):
        heads, head_dim = int(shape[1]), int(shape[3])
        return (
            (1, heads, 0, head_dim),
            (1, heads, context // 2, head_dim),
            (1, heads, context - 1, head_dim),
        )
    raise ModelLoadError(f"unexpected decoder input {name!r} for TensorRT")


def build_plan(trt: Any, onnx_file: Path, context: int) -> bytes:
    """Parse the ONNX decoder and build an FP16 plan with one dynamic-shape profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(tensor.name, tuple(tensor.shape), context))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelLoadError(f"TensorRT failed to build an engine from {onnx_file}")
    return bytes(plan)


class TrtStepper:
    """Runs the plan one step at a time over preallocated device buffers."""

    def __init__(self, engine: Any, memory: CudaMemory, context: int) -> None:
        # the execution context does not keep its engine alive: hold it for as long as we run
        self._engine, self._mem, self._ctx = engine, memory, context
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._dtype = {n: _NP_DTYPES[engine.get_tensor_dtype(n).name] for n in names}
        self._past = sorted(n for n in names if n.startswith("past_key_values."))
        self._has_positions = "position_ids" in names
        shape0 = engine.get_tensor_shape(self._past[0])
        self._heads, self._head_dim = int(shape0[1]), int(shape0[3])
        self._vocab = int(engine.get_tensor_shape("logits")[-1])
        itemsize = np.dtype(self._dtype[self._past[0]]).itemsize
        kv_bytes = self._heads * context * self._head_dim * itemsize
        self._kv = [[memory.alloc(kv_bytes) for _ in self._past] for _ in range(2)]
        self._ids = memory.alloc(PREFILL_CHUNK * 8)
        self._positions = memory.alloc(PREFILL_CHUNK * 8)
        self._mask = memory.alloc(context * 8)
        self._logits = memory.alloc(PREFILL_CHUNK * self._vocab * 4)
        self._length, self._side = 0, 0

    def reset(self) -> None:
        """Start a new sequence (the buffers are reused)."""
        self._length, self._side = 0, 0

    def step(self, token_ids: Sequence[int]) -> Logits:
        """Feed tokens in chunks of PREFILL_CHUNK; return the last position's logits."""
        logits: Logits | None = None
        for start in range(0, len(token_ids), PREFILL_CHUNK):
            logits = self._run(token_ids[start : start + PREFILL_CHUNK])
        if logits is None:
            raise EngineError("tensorrt: step called with no tokens")
        return logits

    def _run(self, chunk: Sequence[int]) -> Logits:
        count, past = len(chunk), self._length
        if past + count > self._ctx:
            raise EngineError(f"tensorrt: sequence exceeds the {self._ctx}-token context")
        c = self._context
        self._bind("input_ids", self._ids, np.asarray([chunk]), (1, count))
        self._bind("attention_mask", self._mask, np.ones((1, past + count)), (1, past + count))
        if self._has_positions:
            positions = np.arange(past, past + count)[None, :]
            self._bind("position_ids", self._positions, positions, (1, count))
        reads, writes = self._kv[self._side], self._kv[1 - self._side]
        for name, src, dst in zip(self._past, reads, writes, strict=True):
            c.set_input_shape(name, (1, self._heads, past, self._head_dim))
            c.set_tensor_address(name, src.ptr)
            c.set_tensor_address(name.replace("past_key_values.", "present."), dst.ptr)
        c.set_tensor_address("logits", self._logits.ptr)
        if not c.execute_async_v3(self._mem.stream):
            raise EngineError("tensorrt: execute_async_v3 failed")
        self._mem.sync()
        row = np.empty(self._vocab, dtype=self._dtype["logits"])
        self._logits.read(row, offset=(count - 1) * self._vocab * row.itemsize)
        self._length, self._side = past + count, 1 - self._side
        return row

    def _bind(
        self, name: str, buf: DeviceBuffer, host: np.ndarray[Any, Any], shape: tuple[int, ...]
    ) -> None:
        buf.write(host.astype(self._dtype[name]))
        self._context.set_input_shape(name, shape)
        self._context.set_tensor_address(name, buf.ptr)

    def close(self) -> None:
        """Drop the execution context and buffers."""
        self._kv, self._context = [], None


def _gpu_identity() -> tuple[str, str]:
    """(name, compute capability) of the current GPU, through torch or cuda-python."""
    try:
        import torch

        major, minor = torch.cuda.get_device_capability()
        return str(torch.cuda.get_device_name()), f"{major}.{minor}"
    except ImportError:
        from cuda.bindings import runtime as cudart

        _err, props = cudart.cudaGetDeviceProperties(0)
        return props.name.decode().strip("\x00"), f"{props.major}.{props.minor}"


class TensorRtEngine(KVLoopEngine):
    """TensorRT FP16 on an NVIDIA GPU (Jetson or discrete)."""

    name = "tensorrt"

    def _open(self, model_path: Path, options: LoadOptions) -> tuple[Stepper, str]:
        trt = import_runtime("tensorrt")
        memory = open_cuda_memory()
        onnx_file = find_onnx(model_path)
        gpu, capability = _gpu_identity()
        key = PlanKey(gpu, capability, str(trt.__version__), file_sha256(onnx_file))
        path = plan_path(options.cache_dir or DEFAULT_CACHE_DIR, key)
        plan = cached_plan(path)
        if plan is None:
            _LOGGER.info("building TensorRT plan for %s on %s (takes minutes)", onnx_file, gpu)
            plan = build_plan(trt, onnx_file, options.context_length)
            store_plan(path, plan)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelLoadError(f"cached TensorRT plan {path} does not deserialize; delete it")
        return TrtStepper(engine, memory, options.context_length), "GPU"
