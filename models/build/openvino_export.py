"""HF checkpoint -> OpenVINO IR (INT8 weights or full precision) that openvino-genai runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from models.build.checkpoint import copy_runtime_files
from models.build.errors import BuildError

_LOGGER = logging.getLogger(__name__)


_PROBE_TEXT = "The capital of France is Paris. 1234 \u00fcn\u00ef"


def _byte_level(hf_tokenizer: Any) -> bool:
    spec = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    return '"ByteLevel"' in json.dumps(spec.get("pre_tokenizer"))


def _convert_tokenizer(hf_tokenizer: Any) -> tuple[Any, Any]:
    """OpenVINO tokenizer and detokenizer models, compiled once to prove they load."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer

    tokenizer, detokenizer = convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    core = ov.Core()
    ids = core.compile_model(tokenizer, "CPU")([_PROBE_TEXT])["input_ids"]
    want = hf_tokenizer(_PROBE_TEXT)["input_ids"]
    if ids.tolist()[0] != want:
        raise BuildError(
            f"openvino-tokenizers encodes {_PROBE_TEXT!r} as {ids.tolist()[0]}, "
            f"the Hugging Face tokenizer as {want}"
        )
    core.compile_model(detokenizer, "CPU")
    return tokenizer, detokenizer


def export_tokenizer(hf_dir: Path, out_dir: Path) -> None:
    """openvino_tokenizer.xml / openvino_detokenizer.xml, checked against the HF tokenizer."""
    # Runs before any weight conversion, so a tokenizer openvino-tokenizers cannot handle fails
    # the target in seconds. A byte-level BPE whose decoder also carries SentencePiece steps
    # (ByteFallback, Replace U+2581: what transformers writes for a GGUF's gpt2 vocab) breaks
    # the detokenizer (`Check 'i < m_inputs.size()' failed ... FuzeRagged`); it is retried
    # with the plain ByteLevel decoder, which decodes such a vocab the same.
    import openvino as ov
    from tokenizers import decoders
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))  # type: ignore[no-untyped-call]
    try:
        tokenizer, detokenizer = _convert_tokenizer(hf_tokenizer)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        if not _byte_level(hf_tokenizer):
            raise BuildError(f"openvino-tokenizers cannot convert this tokenizer: {exc}") from exc
        _LOGGER.info("tokenizer conversion failed (%s); retrying with a ByteLevel decoder", exc)
        hf_tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()
        try:
            tokenizer, detokenizer = _convert_tokenizer(hf_tokenizer)
        except (RuntimeError, ValueError, TypeError, KeyError) as retry_exc:
            raise BuildError(
                f"openvino-tokenizers cannot convert this tokenizer: {retry_exc}"
            ) from retry_exc
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(tokenizer, str(out_dir / "openvino_tokenizer.xml"))
    ov.save_model(detokenizer, str(out_dir / "openvino_detokenizer.xml"))


def export_openvino(hf_dir: Path, out_dir: Path, int8: bool, work_dir: Path) -> None:
    """Tokenizer first, then the IR with optimum-intel (NNCF INT8 weights when `int8`)."""
    try:
        from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    except ImportError as exc:
        raise BuildError(
            "OpenVINO export needs optimum-intel, nncf and openvino-tokenizers: "
            "pip install 'edgefleet[build,openvino]'"
        ) from exc
    tokenizer_dir = work_dir / "openvino-tokenizer"
    if not (tokenizer_dir / "openvino_detokenizer.xml").is_file():  # int8 and fp share it
        export_tokenizer(hf_dir, tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
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
    except Exception as exc:  # optimum and nncf raise bare ValueError/RuntimeError/OV errors
        raise BuildError(f"OpenVINO export of {hf_dir.name} failed: {exc}") from exc
    for file in tokenizer_dir.iterdir():
        shutil.copy2(file, out_dir / file.name)
    copy_runtime_files(hf_dir, out_dir)
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
