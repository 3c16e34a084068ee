"""Streamed tokens/s of each installed engine on the mid reference model, and the auto-pick.

    .venv/bin/python bench/engines.py [--model DIR] [--tokens 128] [--threads 2] [--json]

Streams a greedy generation through each engine's `generate` (so detokenizing and stop
handling are measured too) and reports decode tokens/s (after the first token), prompt time
and time to first token. Without --model it builds or reuses `models.reference` "mid".
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk  # noqa: E402
from agent.engines.registry import create_engine, installed_engines  # noqa: E402
from agent.errors import AgentError  # noqa: E402
from agent.model_loading import probe_profile  # noqa: E402
from agent.selection import explain, select_variant, variant_path  # noqa: E402
from models.manifest import Manifest  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"


def model_dir(arg: str | None) -> Path:
    """The model directory to measure: --model, or the mid reference model."""
    if arg:
        return Path(arg)
    from models.reference import cached_reference

    return cached_reference("mid")  # read in place: the bench changes no file


def measure(
    engine_name: str, path: Path, tokens: int, threads: int, repeats: int
) -> dict[str, Any]:
    """Load once, warm up, then take the best of `repeats` streamed greedy generations."""
    engine = create_engine(engine_name)
    started = time.perf_counter()
    engine.load(path, LoadOptions(context_length=1024, threads=threads))
    load_s = time.perf_counter() - started
    params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    list(engine.generate(PROMPT, SamplingParams(max_tokens=8, temperature=0.0)))
    best: dict[str, Any] = {}
    for attempt in range(repeats):
        prompt = f"{attempt}. {PROMPT}"  # a fresh prefix: no KV-cache reuse across runs
        t0 = time.perf_counter()
        first = 0.0
        done: Completion | None = None
        for item in engine.generate(prompt, params):
            if isinstance(item, TokenChunk) and not first:
                first = time.perf_counter() - t0
            elif isinstance(item, Completion):
                done = item
        total = time.perf_counter() - t0
        assert done is not None
        decode_tps = (done.completion_tokens - 1) / max(total - first, 1e-9)
        if decode_tps > best.get("decode_tok_s", 0.0):
            best = {
                "decode_tok_s": round(decode_tps, 1),
                "overall_tok_s": round(done.completion_tokens / total, 1),
                "ttft_ms": round(first * 1000, 1),
                "tokens": done.completion_tokens,
                "finish": done.finish_reason,
            }
    engine.unload()
    return {"load_s": round(load_s, 2), **best}


def llama_cpp_high_level(path: Path, tokens: int, threads: int) -> float:
    """Decode tok/s of llama-cpp-python's own create_completion(stream=True), for comparison."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=threads, verbose=False)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        first, count = 0.0, 0
        for _chunk in llm.create_completion(
            PROMPT, max_tokens=tokens, temperature=0.0, repeat_penalty=1.0, stream=True
        ):
            count += 1
            first = first or time.perf_counter() - t0
        best = max(best, (count - 1) / max(time.perf_counter() - t0 - first, 1e-9))
    return round(best, 1)


def main() -> None:
    """Run the benchmark and print the table (and a JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory with manifest.json (default: mid ref)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument(
        "--compare-llamacpp",
        action="store_true",
        help="also time llama-cpp-python's create_completion(stream=True) on the GGUF",
    )
    args = parser.parse_args()

    folder = model_dir(args.model)
    manifest = Manifest.load(folder)
    installed = installed_engines()
    rows: list[dict[str, Any]] = []
    for variant in manifest.variants:
        for engine in variant.engines:
            row: dict[str, Any] = {"variant": variant.id, "engine": engine}
            if engine not in installed:
                row["error"] = "not installed"
            else:
                try:
                    row.update(
                        measure(
                            engine,
                            variant_path(folder, variant),
                            args.tokens,
                            args.threads,
                            args.repeats,
                        )
                    )
                except AgentError as exc:
                    row["error"] = str(exc)
            rows.append(row)

    gguf = [v for v in manifest.variants if v.format == "gguf" and "llamacpp" in installed]
    if args.compare_llamacpp and gguf:
        rate = llama_cpp_high_level(variant_path(folder, gguf[0]), args.tokens, args.threads)
        rows.append(
            {
                "variant": gguf[0].id,
                "engine": "llama_cpp.create_completion(stream)",
                "decode_tok_s": rate,
                "overall_tok_s": "",
                "ttft_ms": "",
                "load_s": "",
            }
        )

    print(
        f"model {manifest.ref} ({manifest.parameters:,} parameters), {platform.machine()}, "
        f"{args.threads} threads, {args.tokens} tokens greedy, streamed"
    )
    print(
        f"{'variant':<16} {'engine':<12} {'decode tok/s':>12} {'overall':>8} "
        f"{'TTFT ms':>8} {'load s':>7}"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:<16} {row['engine']:<12} {row['error']}")
        else:
            print(
                f"{row['variant']:<16} {row['engine']:<12} {row['decode_tok_s']:>12} "
                f"{row['overall_tok_s']:>8} {row['ttft_ms']:>8} {row['load_s']:>7}"
            )

    choice: dict[str, str] = {}
    try:
        profile = probe_profile()
        selection = select_variant(manifest, profile, installed)
        print()
        print(explain(selection))
        choice = {
            "variant": selection.variant_id,
            "engine": selection.engine,
            "device": selection.device,
            "device_class": str(profile.get("device_class")),
        }
    except (AgentError, ImportError) as exc:
        print(f"auto-selection unavailable: {exc}")
    if args.json:
        print(
            json.dumps(
                {
                    "model": manifest.ref,
                    "threads": args.threads,
                    "tokens": args.tokens,
                    "results": rows,
                    "selected": choice,
                }
            )
        )


if __name__ == "__main__":
    main()
