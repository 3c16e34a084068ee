"""HF checkpoint -> one ONNX decoder with KV cache (optimum's layout), fp32 weights.

Inputs: input_ids, attention_mask, position_ids, past_key_values.N.key/value; outputs: logits,
present.N.key/value. ONNX Runtime runs it as is; TensorRT builds its FP16 engine from it on the
device.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.build.checkpoint import copy_runtime_files
from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)


def export_onnx(hf_dir: Path, out_dir: Path) -> None:
    """Export `model.onnx` with optimum-onnx (task text-generation-with-past), validated."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise BuildError("ONNX export needs optimum-onnx: pip install 'edgefleet[build]'") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        main_export(
            str(hf_dir),
            output=str(out_dir),
            task="text-generation-with-past",
            device="cpu",
            do_validation=True,
            local_files_only=True,
        )
    except Exception as exc:  # optimum raises bare ValueError/RuntimeError/onnx errors
        raise BuildError(f"ONNX export of {hf_dir} failed: {exc}") from exc
    copy_runtime_files(hf_dir, out_dir)
    if not (out_dir / "model.onnx").is_file():
        raise BuildError(f"ONNX export wrote no model.onnx in {out_dir}")
    _LOGGER.info("ONNX decoder written to %s", out_dir)
