"""How much the agent's REST serving path costs over llama.cpp's own decode loop.

Baseline: llama-cpp-python's low-level `Llama.generate` token loop (greedy, per-token
detokenize, 2 threads) in this process. For comparison, llama-cpp-python's own streaming
`create_completion(stream=True)` on the same Llama object. Served: the same GGUF behind
`edgefleet-agent serve` (a separate process), a streamed /v1/completions read over SSE with
httpx. All decode the same greedy tokens; the figures are decode tokens/s (first token to
last), the agent/baseline ratio (goal >= 0.9) and the time to first token each way. Rounds
alternate to spread the noise of a shared machine.

The default model is the `bench` reference model: 12 layers, 768 wide, 2,048-token vocab,
Q4_0 (54 MB), untrained; built once into the reference cache.

    .venv/bin/python bench/serving_overhead.py [--model PATH] [--tokens 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = "Once upon a time, in a small village by the sea, there lived"
THREADS = 2
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
    from llama_cpp import Llama

    llm = _LLAMAS.get(gguf)
    if llm is None:
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


def start_agent(model: Path, port: int) -> subprocess.Popen[bytes]:
    """`edgefleet-agent serve` in its own process, waited on until /readyz says ready."""
    env = {
        **os.environ,
        "EDGEFLEET_AGENT_THREADS": str(THREADS),
        "PYTHONPATH": str(REPO),
        "EDGEFLEET_AGENT_DATA_DIR": tempfile.mkdtemp(prefix="ef-bench-"),
    }
    cmd = [
        sys.executable,
        "-m",
        "agent.cli",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--engine",
        "llamacpp",
    ]
    process = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    sys.exit("the agent did not become ready")


def served(port: int, tokens: int, pid: int) -> tuple[float, float, int, float]:
    """(decode tok/s, seconds to first token, tokens, agent CPU s/token) through SSE.

    One httpx.Client, connected by the /v1/models call before the clock starts: creating a
    client costs 20-40 ms here (SSL context), which is the bench's cost, not the agent's.
    """
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=120) as client:
        model = client.get(url + "/v1/models").json()["data"][0]["id"]
        body = {
            "model": model,
            "prompt": PROMPT,
            "max_tokens": tokens,
            "temperature": 0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        agent = psutil.Process(pid)
        cpu = sum(agent.cpu_times()[:2])
        started = time.perf_counter()
        first = last = 0.0
        count = 0
        with client.stream("POST", url + "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    count = event["usage"]["completion_tokens"]
                elif event["choices"] and event["choices"][0]["text"]:
                    now = time.perf_counter()
                    first = first or now
                    last = now
        cpu = sum(agent.cpu_times()[:2]) - cpu
    # SSE events batch tokens, so the first event may hold more than one: count from usage.
    return (count - 1) / (last - first), first - started, count, cpu / count


_FAKE_SERVER = """
import sys, time
from pathlib import Path
from typing import Any
from agent.engines.fake import FakeBehaviour, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import serve_in_thread
runtime = ModelRuntime()
behaviour = FakeBehaviour(token_delay_s=float(sys.argv[2]), context_length=8192)
runtime.load_with(lambda: fake_model(Path("."), behaviour))
with serve_in_thread(create_app(runtime), port=int(sys.argv[1])):
    while True:
        time.sleep(1)
"""


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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _FAKE_SERVER, str(port), str(1 / rate)], env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
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


def main() -> None:
    """Print raw llama.cpp, llama-cpp-python streaming and agent decode rates, and TTFT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model dir or .gguf (default: bench reference)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--skip-fake", action="store_true", help="skip the FakeEngine CPU runs")
    args = parser.parse_args()
    model = args.model or default_model()
    gguf = find_gguf(model)
    from agent.server.serve import free_port

    port = args.port or free_port()
    agent = start_agent(model, port)
    base: dict[str, list[float]] = {"rate": [], "ttft": [], "cpu": []}
    lib: dict[str, list[float]] = {"rate": [], "ttft": []}
    through: dict[str, list[float]] = {"rate": [], "ttft": [], "cpu": []}
    try:
        served(port, 8, agent.pid)  # warm-up, both sides
        baseline(gguf, 8)
        for _ in range(args.rounds):
            rate, ttft, n_base, cpu = baseline(gguf, args.tokens)
            _record(base, rate=rate, ttft=ttft, cpu=cpu)
            rate, ttft, n_lib = library_stream(gguf, args.tokens)
            _record(lib, rate=rate, ttft=ttft)
            rate, ttft, n_agent, cpu = served(port, args.tokens, agent.pid)
            _record(through, rate=rate, ttft=ttft, cpu=cpu)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    med = {name: statistics.median(values) for name, values in base.items()}
    med_lib = {name: statistics.median(values) for name, values in lib.items()}
    med_agent = {name: statistics.median(values) for name, values in through.items()}
    best_ratio = max(through["rate"]) / max(base["rate"])
    print(f"model: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB), {THREADS} threads, greedy")
    print(
        f"tokens per run: raw {n_base}, library stream {n_lib}, agent {n_agent}; "
        f"rounds: {args.rounds}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"llama.cpp raw Llama.generate loop    : {med['rate']:7.1f} tok/s  (runs: "
        f"{_runs(base['rate'])})"
    )
    print(
        f"llama-cpp-python streaming completion: {med_lib['rate']:7.1f} tok/s  "
        f"(runs: {_runs(lib['rate'])})"
    )
    print(
        f"agent REST /v1/completions (SSE)    : {med_agent['rate']:7.1f} tok/s  (runs: "
        f"{_runs(through['rate'])})"
    )
    print(
        f"ratio agent / raw                    : {med_agent['rate'] / med['rate']:7.2f} "
        f"median, {best_ratio:.2f} best-of  (goal >= 0.9)"
    )
    print(
        f"CPU per token (all threads)          : raw {med['cpu'] * 1e3:.2f} ms, agent "
        f"process {med_agent['cpu'] * 1e3:.2f} ms"
    )
    added = med_agent["ttft"] - med["ttft"]
    print(
        f"time to first token                  : raw {med['ttft'] * 1e3:.1f} ms, library "
        f"stream {med_lib['ttft'] * 1e3:.1f} ms, agent {med_agent['ttft'] * 1e3:.1f} ms "
        f"(agent adds {added * 1e3:.1f} ms)"
    )
    if args.skip_fake:
        return
    for pace in (420.0, 2000.0):
        cost = serving_cpu_per_token(pace) - engine_cpu_per_token(pace)
        print(
            f"serving path alone, FakeEngine paced at {pace:.0f} tok/s: {cost * 1e6:.0f} us "
            f"CPU per token = {cost * pace:.1%} of one core (the engine's sleeps subtracted)"
        )


if __name__ == "__main__":
    main()
