"""How much the agent's REST serving path costs over llama.cpp's own decode loop.

Baseline: llama-cpp-python's low-level `Llama.generate` token loop (greedy, per-token
detokenize, 2 threads) in this process. For comparison, llama-cpp-python's own streaming
`create_completion(stream=True)` on the same Llama object. Served: the same GGUF behind
`edgefleet-agent serve` (a separate process), a streamed /v1/completions read over SSE with
httpx. All decode the same greedy tokens; the figures are decode tokens/s (first token to
last), the agent/baseline ratio (goal >= 0.9) and the time to first token each way. Rounds
alternate to spread the noise of a shared machine. With --compare-llama-server, llama-cpp-python's
bundled server (`python -m llama_cpp.server`, needs `llama-cpp-python[server]`) serves the same
GGUF with the same threads and context and gets the same streamed /v1/completions request.
The processes and the streamed request live in bench/serving_processes.py.

The default model is the `bench` reference model: 12 layers, 768 wide, 2,048-token vocab,
Q4_0 (54 MB), untrained; built once into the reference cache.

    .venv/bin/python bench/serving_overhead.py [--model PATH] [--tokens 256] [--rounds 3]
        [--compare-llama-server]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from serving_processes import (  # bench/ is on sys.path when this script runs
    PROMPT,
    REPO,
    THREADS,
    context_length,
    served,
    start_agent,
    start_fake_agent,
    start_llama_server,
)

sys.path.insert(0, str(REPO))
_LLAMAS: dict[Path, Any] = {}


def find_gguf(model: Path) -> Path:
    """The Q4 GGUF of a model directory, or the file itself."""
    if model.is_file():
        return model
    candidates = sorted(model.glob("**/*q4*.gguf")) or sorted(model.glob("**/*.gguf"))
    if not candidates:
        sys.exit(f"no .gguf under {model}")
    return candidates[0]


def _llama(gguf: Path) -> Any:
    """One Llama per file, loaded once, so every round starts warm like the agent."""
    import llama_cpp
    from llama_cpp import Llama

    from models.llamacpp_amx import avoid_faulting_amx

    llm = _LLAMAS.get(gguf)
    if llm is None:
        avoid_faulting_amx(llama_cpp, gguf)  # the same CPU workaround the agent applies
        llm = _LLAMAS[gguf] = Llama(
            model_path=str(gguf),
            n_ctx=2048,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            verbose=False,
        )
    return llm


def baseline(gguf: Path, tokens: int) -> tuple[float, float, int, float]:
    """(decode tok/s, seconds to first token, tokens, CPU s/token) of the raw llama.cpp loop.

    Like the agent's engine, it keeps the KV cache between runs (llama-cpp-python reuses the
    prompt prefix), so both pay the same prompt evaluation.
    """
    llm = _llama(gguf)
    eos = llm.token_eos()
    cpu = time.process_time()
    started = time.perf_counter()
    prompt = llm.tokenize(PROMPT.encode())
    first = last = 0.0
    count = 0
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        if token == eos:
            break
        llm.detokenize([token])
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
        if count >= tokens:
            break
    cpu = time.process_time() - cpu
    return (count - 1) / (last - first), first - started, count, cpu / count


def library_stream(gguf: Path, tokens: int) -> tuple[float, float, int]:
    """(decode tok/s, seconds to first token, tokens) of `create_completion(stream=True)`."""
    llm = _llama(gguf)
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    stream = llm.create_completion(
        PROMPT, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=True
    )
    for chunk in stream:
        if chunk["choices"][0]["finish_reason"] is None:
            count += 1  # one chunk per token; the last one only carries finish_reason
        if chunk["choices"][0]["text"]:
            now = time.perf_counter()
            first = first or now
            last = now
    return (count - 1) / (last - first), first - started, count


def engine_cpu_per_token(rate: float, tokens: int = 1000) -> float:
    """CPU seconds per token of the paced FakeEngine alone (its sleeps), to subtract."""
    from agent.engines.base import LoadOptions, SamplingParams
    from agent.engines.fake import FakeBehaviour, FakeEngine

    engine = FakeEngine(FakeBehaviour(token_delay_s=1 / rate, context_length=8192))
    engine.load(Path("."), LoadOptions())
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    costs = []
    for _ in range(3):
        cpu = time.process_time()
        for _item in engine.generate(PROMPT, params):
            pass
        costs.append((time.process_time() - cpu) / tokens)
    return statistics.median(costs)


def serving_cpu_per_token(rate: float, tokens: int = 1000) -> float:
    """Agent CPU seconds per token with the FakeEngine paced at `rate` tok/s (no model work)."""
    from agent.server.serve import free_port

    port = free_port()
    process = start_fake_agent(port, 1 / rate)
    try:
        served(port, 8, process.pid)
        return statistics.median(served(port, tokens, process.pid)[3] for _ in range(3))
    finally:
        process.terminate()
        process.wait(timeout=30)


def default_model() -> Path:
    """The bench reference model's directory in the reference cache (built on first use)."""
    from models.reference import cached_reference

    print("reference model 'bench' (built once, about a minute) ...", file=sys.stderr)
    return cached_reference("bench")


def _record(series: dict[str, list[float]], **values: float) -> None:
    for name, value in values.items():
        series[name].append(value)


def _runs(rates: list[float]) -> str:
    return ", ".join(f"{r:.0f}" for r in rates)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model dir or .gguf (default: bench reference)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--skip-fake", action="store_true", help="skip the FakeEngine CPU runs")
    parser.add_argument(
        "--compare-llama-server",
        action="store_true",
        help="also stream from `python -m llama_cpp.server` (needs llama-cpp-python[server])",
    )
    return parser.parse_args()


def main() -> None:
    """Print raw llama.cpp, llama-cpp-python streaming and agent decode rates, and TTFT."""
    args = _parse()
    model = args.model or default_model()
    gguf = find_gguf(model)
    from agent.server.serve import free_port

    port = args.port or free_port()
    rival_port = free_port() if args.compare_llama_server else 0
    servers = [start_agent(model, port)]
    runs: dict[str, dict[str, list[float]]] = {
        name: {"rate": [], "ttft": [], "cpu": []} for name in ("raw", "lib", "agent", "rival")
    }
    counts: dict[str, int] = {}
    try:
        if rival_port:
            servers.append(start_llama_server(gguf, rival_port, context_length(model)))
            served(rival_port, 8, servers[1].pid, llama_server=True)  # warm-up
        served(port, 8, servers[0].pid)  # warm-up, both sides
        baseline(gguf, 8)
        for _ in range(args.rounds):
            rate, ttft, counts["raw"], cpu = baseline(gguf, args.tokens)
            _record(runs["raw"], rate=rate, ttft=ttft, cpu=cpu)
            rate, ttft, counts["lib"] = library_stream(gguf, args.tokens)
            _record(runs["lib"], rate=rate, ttft=ttft)
            rate, ttft, counts["agent"], cpu = served(port, args.tokens, servers[0].pid)
            _record(runs["agent"], rate=rate, ttft=ttft, cpu=cpu)
            if rival_port:
                rate, ttft, counts["rival"], cpu = served(
                    rival_port, args.tokens, servers[1].pid, llama_server=True
                )
                _record(runs["rival"], rate=rate, ttft=ttft, cpu=cpu)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    _report(gguf, runs, counts, args.rounds)
    if args.skip_fake:
        return
    for pace in (420.0, 2000.0):
        cost = serving_cpu_per_token(pace) - engine_cpu_per_token(pace)
        print(
            f"serving path alone, FakeEngine paced at {pace:.0f} tok/s: {cost * 1e6:.0f} us "
            f"CPU per token = {cost * pace:.1%} of one core (the engine's sleeps subtracted)"
        )


_LABELS = {
    "raw": "llama.cpp raw Llama.generate loop",
    "lib": "llama-cpp-python streaming completion",
    "agent": "agent REST /v1/completions (SSE)",
    "rival": "llama_cpp.server /v1/completions SSE",
}


def _report(
    gguf: Path, runs: dict[str, dict[str, list[float]]], counts: dict[str, int], rounds: int
) -> None:
    med = {
        name: {key: statistics.median(values) if values else 0.0 for key, values in row.items()}
        for name, row in runs.items()
    }
    raw, lib, agent, rival = med["raw"], med["lib"], med["agent"], med["rival"]
    best_ratio = max(runs["agent"]["rate"]) / max(runs["raw"]["rate"])
    print(f"model: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB), {THREADS} threads, greedy")
    print(
        "tokens per run: "
        + ", ".join(f"{name} {count}" for name, count in counts.items())
        + f"; rounds: {rounds}; load average {os.getloadavg()[0]:.2f}"
    )
    for name, label in _LABELS.items():
        if runs[name]["rate"]:
            rates = runs[name]["rate"]
            print(f"{label:37}: {med[name]['rate']:7.1f} tok/s  (runs: {_runs(rates)})")
    print(
        f"ratio agent / raw                    : {agent['rate'] / raw['rate']:7.2f} "
        f"median, {best_ratio:.2f} best-of  (goal >= 0.9)"
    )
    if runs["rival"]["rate"]:
        print(f"ratio agent / llama_cpp.server       : {agent['rate'] / rival['rate']:7.2f} median")
    print(
        f"CPU per token (all threads)          : raw {raw['cpu'] * 1e3:.2f} ms, agent "
        f"process {agent['cpu'] * 1e3:.2f} ms"
        + (
            f", llama_cpp.server process {rival['cpu'] * 1e3:.2f} ms"
            if runs["rival"]["cpu"]
            else ""
        )
    )
    print(
        f"time to first token                  : raw {raw['ttft'] * 1e3:.1f} ms, library "
        f"stream {lib['ttft'] * 1e3:.1f} ms, agent {agent['ttft'] * 1e3:.1f} ms "
        f"(adds {(agent['ttft'] - raw['ttft']) * 1e3:.1f} ms)"
        + (
            f", llama_cpp.server {rival['ttft'] * 1e3:.1f} ms "
            f"(adds {(rival['ttft'] - raw['ttft']) * 1e3:.1f} ms)"
            if runs["rival"]["ttft"]
            else ""
        )
    )


if __name__ == "__main__":
    main()
