"""How long the agent's other threads wait while OpenVINO's continuous batching runs.

openvino-genai's `ContinuousBatchingPipeline.step()` holds the GIL for the whole step. A thread
that sleeps 1 ms in a loop stands in for the agent's event loop (uvicorn, SSE writes,
tokenizing): its gaps are how late those would run. Two ways, same model, same streams:

- `in-process`: the pipeline stepped from a thread of this process, as the agent did before
  (bench/openvino_pipeline.py's DirectPipeline);
- `agent`: the agent's OpenVinoEngine, whose pipeline runs in a child process
  (agent/engines/openvino_process.py).

Prints, per way and client count: ticks per second (1000 = never held up), the p99 and longest
gap between ticks, tok/s over all streams, and TTFT p50 / max.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.engines.base import LoadOptions, SamplingParams, TokenChunk  # noqa: E402
from agent.engines.openvino import OpenVinoEngine  # noqa: E402
from bench.openvino_pipeline import DirectPipeline  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis simply.",
    "Tell me a story about a dragon.",
    "List three uses of copper.",
    "Why is the sky blue?",
    "How do bees make honey?",
    "What is a prime number?",
]


class Ticker:
    """A thread that sleeps 1 ms at a time and records when it woke."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.perf_counter())
            time.sleep(0.001)

    def figures(self) -> dict[str, float]:
        gaps = sorted(b - a for a, b in zip(self.times, self.times[1:], strict=False))
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 1.0
        return {
            "ticks_per_s": len(gaps) / span,
            "gap_p99_ms": 1000 * gaps[int(0.99 * (len(gaps) - 1))] if gaps else 0.0,
            "gap_max_ms": 1000 * gaps[-1] if gaps else 0.0,
        }


def _measure(run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`run`'s figures and the ticker's while it ran."""
    with Ticker() as ticker:
        figures = run()
    return {**figures, **ticker.figures()}


def _agent_round(engine: OpenVinoEngine, prompts: list[str], tokens: int) -> dict[str, float]:
    params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    started = time.perf_counter()
    ttfts: list[float] = []
    counts = [0] * len(prompts)

    def one(i: int) -> None:
        for item in engine.generate(prompts[i], params):
            if isinstance(item, TokenChunk):
                if not counts[i]:
                    ttfts.append(time.perf_counter() - started)
                counts[i] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "tok_s": sum(counts) / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_max": max(ttfts),
    }


def _in_process_round(
    direct: DirectPipeline, prompts: list[object], tokens: int
) -> dict[str, float]:
    result: dict[str, float] = {}

    def work() -> None:
        result.update(direct.round(prompts, tokens))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    # its p99 of at most 8 values is the largest
    return {
        "tok_s": result["aggregate"],
        "ttft_p50": result["ttft_p50"],
        "ttft_max": result["ttft_p99"],
    }


Row = tuple[str, int, dict[str, float]]
HEADER = (
    "| pipeline | clients | ticks/s | gap p99 ms | gap max ms | tok/s | TTFT p50 s | TTFT max s |"
)


def _in_process_rows(args: argparse.Namespace, clients: list[int]) -> list[Row]:
    direct = DirectPipeline(
        args.model, threads=args.threads, slots=args.parallel, batch_invariant=True
    )
    direct.round([direct.prompt([{"role": "user", "content": "hi"}])], 8)  # warm-up
    rows: list[Row] = []
    for n in clients:
        ids = [direct.prompt([{"role": "user", "content": q}]) for q in (QUESTIONS * 4)[:n]]
        run = functools.partial(_in_process_round, direct, ids, args.tokens)
        rows.append(("in-process", n, _measure(run)))
    return rows


def _agent_rows(args: argparse.Namespace, clients: list[int]) -> list[Row]:
    chat = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in QUESTIONS * 4]
    engine = OpenVinoEngine()
    options = LoadOptions(threads=args.threads, context_length=2048, parallel=args.parallel)
    engine.load(args.model, options)
    rows: list[Row] = []
    try:
        _agent_round(engine, chat[:1], 8)  # warm-up
        for n in clients:
            run = functools.partial(_agent_round, engine, chat[:n], args.tokens)
            rows.append(("agent", n, _measure(run)))
    finally:
        engine.unload()
    return rows


def main() -> None:
    """Run both ways at each client count and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="OpenVINO IR dir (default: SmolLM2 INT8)")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    if args.model is None:
        from agent.selection import variant_path
        from models.manifest import Manifest
        from tests.support.real_openvino import smollm2_openvino

        directory = smollm2_openvino()
        manifest = Manifest.load(directory)
        args.model = variant_path(directory, manifest.variant("openvino-int8"))
    clients = [int(c) for c in args.clients.split(",")]
    rows = _in_process_rows(args, clients) + _agent_rows(args, clients)
    print(
        f"{args.model.parent.name}/{args.model.name}, {args.threads} threads, {args.parallel} "
        f"slots, {args.tokens} greedy tokens a stream\n"
    )
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|")
    for way, n, f in rows:
        print(
            f"| {way} | {n} | {f['ticks_per_s']:.0f} | {f['gap_p99_ms']:.1f} | "
            f"{f['gap_max_ms']:.1f} | {f['tok_s']:.1f} | {f['ttft_p50']:.3f} | "
            f"{f['ttft_max']:.3f} |"
        )


if __name__ == "__main__":
    main()
