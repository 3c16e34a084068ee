"""Each engine on a real model: decode and prompt tokens/s, time to first token, and the limit.

    .venv/bin/python bench/engines.py [--model DIR|FILE.gguf] [--tokens 128] [--threads 2]
                                      [--prompt-tokens 512] [--repeats 2] [--json]

Without --model it measures SmolLM2-135M-Instruct (Q4_1 GGUF, from the real-model cache) on
llama.cpp. A model directory (`edgefleet-models build`) is measured on every (variant, engine)
pair its manifest lists; engines that need a built variant (OpenVINO, ONNX Runtime) are listed
as not measured, with the reason, when there is none. Each run streams a greedy generation
through the engine's `generate` (detokenizing and stop handling included) after a prompt of
exactly --prompt-tokens tokens, with a fresh prefix each time so no KV cache is reused.

Decode is set against this machine's limit: every token reads all the weights once, so decode
can't beat memory bandwidth / model bytes; the bandwidth is measured here (a numpy copy of a
256 MiB array, read + write). Figures depend on the machine and its load: they are printed,
not asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.engines.base import Completion, Engine, LoadOptions, SamplingParams, TokenChunk  # noqa: E402
from agent.engines.registry import create_engine, installed_engines  # noqa: E402
from agent.errors import AgentError  # noqa: E402
from agent.model_loading import probe_profile  # noqa: E402
from agent.selection import engine_device, explain, select_variant, variant_path  # noqa: E402
from models.manifest import Manifest  # noqa: E402

BUILT_ONLY = {"openvino": "openvino", "onnxruntime": "onnx"}  # engine -> variant format it needs
FILLER = (
    "The harbour was quiet in the early morning. Fishing boats rocked on the grey water, and "
    "gulls circled above the market where the first traders were setting out their stalls. "
)
BANDWIDTH_BYTES = 256 << 20


def memory_bandwidth(repeats: int = 5) -> float:
    """Bytes/s a large numpy copy moves (read + write), best of `repeats`."""
    src = np.ones(BANDWIDTH_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def prompt_of(engine: Engine, tokens: int, prefix: str) -> str:
    """A text of exactly `tokens` tokens for this engine (BOS included), starting with `prefix`."""
    words = (FILLER * (tokens // 8 + 8)).split()
    low, high = 0, len(words)
    while low < high:  # the most words whose prompt still fits
        mid = (low + high + 1) // 2
        if engine.count_tokens(prefix + " ".join(words[:mid])) <= tokens:
            low = mid
        else:
            high = mid - 1
    text = prefix + " ".join(words[:low])
    pad = tokens - engine.count_tokens(text)
    return text + " ." * max(pad, 0) if pad > 0 else text


def run_once(engine: Engine, prompt: str, params: SamplingParams) -> dict[str, float]:
    """One streamed generation: TTFT, prompt and decode tokens/s."""
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
    prompt_s = done.prompt_eval_ns / 1e9 if done.prompt_eval_ns else first
    return {
        "ttft_ms": first * 1000,
        "prompt_tok_s": done.prompt_tokens / max(prompt_s, 1e-9),
        "decode_tok_s": (done.completion_tokens - 1) / max(total - first, 1e-9),
        "tokens": done.completion_tokens,
        "prompt_tokens": done.prompt_tokens,
    }


def measure(engine_name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load once, warm up, then the best of `repeats` runs per figure."""
    engine = create_engine(engine_name)
    started = time.perf_counter()
    context = max(2048, args.prompt_tokens + args.tokens + 64)  # the agent's default or more
    # One sequence: a single stream's speed (batching engines would size slots for many).
    engine.load(path, LoadOptions(context_length=context, threads=args.threads, parallel=1))
    load_s = time.perf_counter() - started
    list(engine.generate("Hello", SamplingParams(max_tokens=4, temperature=0.0)))
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, repeat_penalty=1.0)
    runs = [
        run_once(engine, prompt_of(engine, args.prompt_tokens, f"{i}. "), params)
        for i in range(args.repeats)
    ]
    stats = engine.stats()
    engine.unload()
    return {
        "load_s": round(load_s, 2),
        "device": stats.device,
        "decode_tok_s": round(max(r["decode_tok_s"] for r in runs), 1),
        "prompt_tok_s": round(max(r["prompt_tok_s"] for r in runs), 1),
        "ttft_ms": round(min(r["ttft_ms"] for r in runs), 1),
        "tokens": int(min(r["tokens"] for r in runs)),
        "prompt_tokens": int(runs[0]["prompt_tokens"]),
    }


def plan(target: Path) -> tuple[str, list[dict[str, Any]], str]:
    """The model's name, the (variant, engine, path, bytes) rows to measure, and the auto-pick."""
    installed = installed_engines()
    profile = probe_profile()
    if target.is_file():
        rows: list[dict[str, Any]] = [
            {
                "variant": "gguf",
                "engine": "llamacpp",
                "path": target,
                "bytes": target.stat().st_size,
            }
        ]
        for engine, fmt in BUILT_ONLY.items():
            rows.append(
                {
                    "variant": "-",
                    "engine": engine,
                    "error": f"not measured: needs a "
                    f"built model dir with an {fmt} variant (--model DIR)",
                }
            )
        device = engine_device("llamacpp", profile)
        pick = f"a bare .gguf always runs on llamacpp (planned device: {device})"
        return target.name, rows, pick
    manifest = Manifest.load(target)
    rows = []
    for variant in manifest.variants:
        for engine in variant.engines:
            row: dict[str, Any] = {
                "variant": variant.id,
                "engine": engine,
                "bytes": variant.size_bytes,
            }
            if engine not in installed:
                row["error"] = "not installed"
            else:
                row["path"] = variant_path(target, variant)
            rows.append(row)
    formats = {v.format for v in manifest.variants}
    for engine, fmt in BUILT_ONLY.items():
        if fmt not in formats:
            rows.append(
                {
                    "variant": "-",
                    "engine": engine,
                    "error": f"not measured: the model has no {fmt} variant",
                }
            )
    try:
        pick = explain(select_variant(manifest, profile, installed))
    except AgentError as exc:
        pick = f"auto-selection: {exc}"
    return manifest.ref, rows, pick


def main() -> None:
    """Run the benchmark and print the table (and a JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory or .gguf (default: SmolLM2 GGUF)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to decode")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()
    if args.model:
        target = Path(args.model)
    else:
        from models.real_models import SMOLLM2, fetch_gguf

        target = fetch_gguf(SMOLLM2)
    name, rows, pick = plan(target)
    bandwidth = memory_bandwidth()
    for row in rows:
        if "path" not in row:
            continue
        try:
            row.update(measure(row["engine"], row.pop("path"), args))
        except AgentError as exc:
            row["error"] = str(exc)
            continue
        limit = bandwidth / row["bytes"]
        row["limit_tok_s"] = round(limit, 1)
        row["of_limit"] = f"{row['decode_tok_s'] / limit:.0%}"

    print(
        f"model {name}, {platform.machine()}, {args.threads} threads, prompt "
        f"{args.prompt_tokens} tokens, {args.tokens} tokens greedy, streamed, best of "
        f"{args.repeats}; memory bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy)"
    )
    head = (
        "variant",
        "engine",
        "device",
        "MB",
        "decode tok/s",
        "limit",
        "of limit",
        "prompt tok/s",
        "TTFT ms",
        "load s",
    )
    print(
        f"{head[0]:<14} {head[1]:<12} {head[2]:<6} {head[3]:>6} {head[4]:>12} {head[5]:>7} "
        f"{head[6]:>8} {head[7]:>12} {head[8]:>8} {head[9]:>6}"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:<14} {row['engine']:<12} {row['error']}")
            continue
        print(
            f"{row['variant']:<14} {row['engine']:<12} {row['device']:<6} "
            f"{row['bytes'] / 1e6:>6.0f} {row['decode_tok_s']:>12} {row['limit_tok_s']:>7} "
            f"{row['of_limit']:>8} {row['prompt_tok_s']:>12} {row['ttft_ms']:>8} "
            f"{row['load_s']:>6}"
        )
    print(f"\nauto-selection: {pick}")
    if args.json:
        for row in rows:
            row.pop("path", None)
        print(
            json.dumps(
                {
                    "model": name,
                    "threads": args.threads,
                    "tokens": args.tokens,
                    "prompt_tokens": args.prompt_tokens,
                    "bandwidth_gb_s": round(bandwidth / 1e9, 2),
                    "results": rows,
                    "selected": pick,
                }
            )
        )


if __name__ == "__main__":
    main()
