"""ONNX Runtime engine: our own KV-cache loop over an optimum-layout decoder export."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.engines.base import LoadOptions
from agent.engines.kvloop import KVLoopEngine, Logits, Stepper, find_onnx
from agent.engines.registry import import_runtime
from agent.errors import ModelLoadError

_LOGGER = logging.getLogger(__name__)

PROVIDER_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def choose_providers(available: Sequence[str], device: str) -> list[str]:
    """Execution providers to ask for, best first; GPU ones only when the device is a GPU."""
    wanted = list(PROVIDER_ORDER)
    if device.upper() == "CPU":
        wanted = ["CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class DecoderLayout:
    """Names, shapes and dtypes of an optimum 'text-generation-with-past' decoder."""

    def __init__(self, inputs: Sequence[Any]) -> None:
        names = {i.name: i for i in inputs}
        if "input_ids" not in names or "attention_mask" not in names:
            raise ModelLoadError("ONNX model lacks input_ids/attention_mask (not a decoder?)")
        self.has_position_ids = "position_ids" in names
        self.past: list[tuple[str, tuple[int, int], type[np.floating[Any]]]] = []
        for name, meta in names.items():
            if _PAST.match(name):
                heads, head_dim = meta.shape[1], meta.shape[3]
                if not isinstance(heads, int) or not isinstance(head_dim, int):
                    raise ModelLoadError(f"{name} has symbolic head dimensions {meta.shape}")
                self.past.append((name, (heads, head_dim), _ORT_FLOAT.get(meta.type, np.float32)))
        if not self.past:
            raise ModelLoadError("ONNX model has no past_key_values inputs; export with-past")
        self.past.sort(key=lambda item: _layer_key(item[0]))

    def empty_cache(self) -> dict[str, np.ndarray[Any, Any]]:
        """Zero-length past tensors for the first step."""
        return {n: np.zeros((1, h, 0, d), dtype=t) for n, (h, d), t in self.past}

    def present_name(self, past_name: str) -> str:
        """The output that carries the updated cache for a past input."""
        return past_name.replace("past_key_values.", "present.")


def _layer_key(name: str) -> tuple[int, str]:
    match = _PAST.match(name)
    assert match is not None
    return int(match.group(1)), match.group(2)


class OrtStepper:
    """Runs one decoder step at a time, keeping present.* as the next past_key_values.*."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._layout = DecoderLayout(session.get_inputs())
        self._outputs = ["logits"] + [self._layout.present_name(n) for n, _, _ in self._layout.past]
        self._cache: dict[str, np.ndarray[Any, Any]] = {}
        self._length = 0

    def reset(self) -> None:
        """Start a new sequence."""
        self._cache = self._layout.empty_cache()
        self._length = 0

    def step(self, token_ids: Sequence[int]) -> Logits:
        """Feed tokens, return the last position's logits."""
        count = len(token_ids)
        feed: dict[str, np.ndarray[Any, Any]] = {
            "input_ids": np.asarray([token_ids], dtype=np.int64),
            "attention_mask": np.ones((1, self._length + count), dtype=np.int64),
        }
        if self._layout.has_position_ids:
            positions = np.arange(self._length, self._length + count, dtype=np.int64)
            feed["position_ids"] = positions[None, :]
        feed.update(self._cache)
        logits, *presents = self._session.run(self._outputs, feed)
        self._cache = {name: p for (name, _, _), p in zip(self._layout.past, presents, strict=True)}
        self._length += count
        row: Logits = logits[0, -1]
        return row

    def close(self) -> None:
        """Drop the session."""
        self._cache = {}


class OnnxRuntimeEngine(KVLoopEngine):
    """ONNX Runtime on the best installed execution provider."""

    name = "onnxruntime"

    def _open(self, model_path: Path, options: LoadOptions) -> tuple[Stepper, str]:
        ort = import_runtime("onnxruntime")
        onnx_file = find_onnx(model_path)
        providers = choose_providers(ort.get_available_providers(), options.device)
        session_options = ort.SessionOptions()
        if options.threads:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_file), session_options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(f"onnxruntime cannot load {onnx_file}: {exc}") from exc
        active = session.get_providers()
        _LOGGER.info("onnxruntime loaded %s with %s", onnx_file, active)
        if active[0] == "OpenVINOExecutionProvider":
            return OrtStepper(session), options.device
        return OrtStepper(session), "CPU" if active[0] == "CPUExecutionProvider" else "GPU"
