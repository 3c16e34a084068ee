"""Parity on real weights: every engine against transformers fp32, SmolLM2 and Gemma 3.

    .venv/bin/python bench/parity.py [--models smollm2,gemma3] [--keep DIR] [--json]

Builds each real model's checkpoint (models.real_models, cached) into gguf-q4, gguf-q8,
openvino-int8 and onnx with the pipeline (timing each target), then measures teacher-forced
top-1 agreement with transformers fp32 over the English text in tests/fixtures/text/english.txt
and greedy answers to short factual prompts (models.build.parity). With --keep DIR, builds go
to DIR/<model> and a signed build found there is reused (its build times are then not shown).
Prints a table; asserts nothing (tests/models/test_real_parity.py holds the floors).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.build.parity import QUESTIONS, EngineParity, measure, wrong_answers  # noqa: E402
from models.build.pipeline import build_targets  # noqa: E402
from models.keys import generate_key
from models.manifest import MANIFEST_FILE, Manifest  # noqa: E402
from models.real_models import REAL_MODELS, hf_checkpoint  # noqa: E402

TARGETS = ("gguf-q4", "gguf-q8", "openvino-int8", "onnx")
TEXT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "text" / "english.txt"
MEASURED = ("gguf-q4", "gguf-q8_0", "openvino-int8", "onnx-fp32")


def _build(key: str, out: Path) -> tuple[Path, Path, dict[str, float]]:
    hf = hf_checkpoint(REAL_MODELS[key])
    if (out / MANIFEST_FILE).is_file():
        return hf, out, {}
    result = build_targets(hf, out, TARGETS, generate_key(), name=key)
    for target, reason in result.failed.items():
        print(f"{key}: {target} not built: {reason}")
    return hf, out, result.seconds


def _variant_ids(model_dir: Path) -> list[str]:
    ids = [v.id for v in Manifest.load(model_dir).variants]
    return [i for i in ids if any(i.startswith(m) for m in MEASURED)]


def _table(results: dict[str, list[EngineParity]], seconds: dict[str, dict[str, float]]) -> None:
    models = list(results)
    print(f"\n{'engine / variant':24s}" + "".join(f"{m:>22s}" for m in models))
    engines = list(dict.fromkeys(r.engine for rows in results.values() for r in rows))
    for engine in engines:
        cells = []
        for model in models:
            row = next((r for r in results[model] if r.engine == engine), None)
            wrong = len(wrong_answers(row)) if row else 0
            cell = (
                "-"
                if row is None
                else f"{row.agreement:.3f} {len(QUESTIONS) - wrong}/{len(QUESTIONS)}"
            )
            cells.append(f"{cell:>22s}")
        print(f"{engine:24s}" + "".join(cells))
    positions = "".join(f"{results[m][0].positions:>22d}" for m in models)
    print(f"{'positions compared':24s}{positions}")
    print("(cells: teacher-forced top-1 agreement with transformers fp32, factual answers right)")
    print("(gguf-q4's time includes the f32 conversion that gguf-q8 reuses)")
    print(f"\n{'build time':24s}" + "".join(f"{m:>22s}" for m in models))
    for target in TARGETS:
        cells = [f"{seconds[m].get(target, float('nan')):>20.1f} s" for m in models]
        print(f"{target:24s}" + "".join(cells))
    for model, rows in results.items():
        for row in rows:
            for line in wrong_answers(row):
                print(f"{model} {row.engine}: {line}")


def main() -> None:
    """Build, measure and print the parity table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,gemma3")
    parser.add_argument("--keep", type=Path, help="build into (and reuse) DIR/<model>")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[EngineParity]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for key in args.models.split(","):
            hf, model_dir, seconds[key] = _build(key, root / key)
            results[key] = measure(hf, model_dir, _variant_ids(model_dir), TEXT)
    _table(results, seconds)
    if args.json:
        print(json.dumps({m: [r.__dict__ for r in rows] for m, rows in results.items()}, indent=2))


if __name__ == "__main__":
    main()
