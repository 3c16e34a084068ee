"""HF checkpoint -> OpenVINO IR (INT8 weights or full precision) that openvino-genai runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)

# What openvino_genai.LLMPipeline reads besides the IR: configs and the HF tokenizer files.
_COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def export_openvino(hf_dir: Path, out_dir: Path, int8: bool) -> None:
    """Export with optimum-intel (NNCF INT8 weights when `int8`), plus OV tokenizer/detokenizer."""
    try:
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise BuildError(
            "OpenVINO export needs optimum-intel, nncf and openvino-tokenizers: "
            "pip install 'edgefleet[build,openvino]'"
        ) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    if int8:
        model = OVModelForCausalLM.from_pretrained(
            str(hf_dir),
            export=True,
            compile=False,
            quantization_config=OVWeightQuantizationConfig(bits=8, sym=False),
        )
    else:
        model = OVModelForCausalLM.from_pretrained(
            str(hf_dir), export=True, compile=False, load_in_8bit=False
        )
    model.save_pretrained(str(out_dir))
    hf_tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))  # type: ignore[no-untyped-call]
    ov_tokenizer, ov_detokenizer = convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, str(out_dir / "openvino_tokenizer.xml"))
    ov.save_model(ov_detokenizer, str(out_dir / "openvino_detokenizer.xml"))
    for name in _COPIED_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, out_dir / name)
    _scrub_checkpoint_path(out_dir / "openvino_config.json", hf_dir)
    _LOGGER.info("OpenVINO IR (%s) written to %s", "int8" if int8 else "fp32", out_dir)


def _scrub_checkpoint_path(config_file: Path, hf_dir: Path) -> None:
    """Drop the build machine's checkpoint path optimum records, so builds are reproducible."""
    if not config_file.is_file():
        return
    prefixes = (str(hf_dir), str(hf_dir.resolve()))

    def scrub(value: object) -> object:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str) and value.startswith(prefixes):
            return None
        return value

    data = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps(scrub(data), indent=2) + "\n", encoding="utf-8")
