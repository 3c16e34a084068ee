"""The shared KV loop (agent.engines.kvloop) over a test stepper instead of a model."""

from __future__ import annotations

from pathlib import Path

from agent.engines.base import LoadOptions
from agent.engines.kvloop import KVLoopEngine, Stepper


class FakeStepEngine(KVLoopEngine):
    """KVLoopEngine whose load opens `stepper` "on the GPU": what TensorRT runs, minus the GPU."""

    name = "fake-kv"

    def __init__(self, stepper: Stepper) -> None:
        super().__init__()
        self.stepper = stepper

    def _open(self, model_path: Path, options: LoadOptions) -> tuple[Stepper, str]:
        return self.stepper, "GPU"
