"""How much the agent's REST serving path costs over llama.cpp's own decode loop.

Baseline: llama-cpp-python's low-level `Llama.generate` token loop (greedy, per-token
detokenize, 2 threads) in this process. Served: the same GGUF behind `edgefleet-agent serve`
(a separate process), a streamed /v1/completions read over SSE with httpx. Both decode the
same greedy tokens; the figure is decode tokens/s (first token to last) and their ratio, plus
the time to first token each way. Rounds alternate to spread the noise of a shared machine.

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


def baseline(gguf: Path, tokens: int) -> tuple[float, float, int, float]:
    """(decode tok/s, seconds to first token, tokens, CPU s/token) of the raw llama.cpp loop."""
    from llama_cpp import Llama

    llm = _LLAMAS.get(gguf)
    if llm is None:  # load once, so every round starts warm like the agent
        llm = _LLAMAS[gguf] = Llama(model_path=str(gguf), n_ctx=2048, n_threads=THREADS,
                                    n_threads_batch=THREADS, verbose=False)  # fmt: skip
        llm.reset()
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
    llm.reset()
    return (count - 1) / (last - first), first - started, count, cpu / count


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
    """(decode tok/s, seconds to first token, tokens, agent CPU s/token) through SSE."""
    url = f"http://127.0.0.1:{port}"
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
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
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
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


def main() -> None:
    """Print baseline vs served decode rates and time to first token."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model dir or .gguf (default: mid reference)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    model = args.model
    if model is None:
        from models.reference import build_reference

        model = Path(tempfile.gettempdir()) / "edgefleet-bench-mid"
        if not (model / "manifest.json").is_file():
            print("building the mid reference model ...", file=sys.stderr)
            build_reference("mid", model)
    gguf = find_gguf(model)
    from agent.server.serve import free_port

    port = args.port or free_port()
    agent = start_agent(model, port)
    base_rates, base_ttft, agent_rates, agent_ttft = [], [], [], []
    base_cpu, agent_cpu = [], []
    try:
        served(port, 8, agent.pid)  # warm-up
        for _ in range(args.rounds):
            rate, ttft, n_base, cpu = baseline(gguf, args.tokens)
            base_rates.append(rate)
            base_ttft.append(ttft)
            base_cpu.append(cpu)
            rate, ttft, n_agent, cpu = served(port, args.tokens, agent.pid)
            agent_rates.append(rate)
            agent_ttft.append(ttft)
            agent_cpu.append(cpu)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    base, through = statistics.median(base_rates), statistics.median(agent_rates)
    best_ratio = max(agent_rates) / max(base_rates)
    print(f"model: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB), {THREADS} threads, greedy")
    print(f"tokens per run: baseline {n_base}, agent {n_agent}; rounds: {args.rounds}")
    print(
        f"llama.cpp Llama.generate loop : {base:7.1f} tok/s  (runs: "
        f"{', '.join(f'{r:.0f}' for r in base_rates)})"
    )
    print(
        f"agent REST, SSE over httpx    : {through:7.1f} tok/s  (runs: "
        f"{', '.join(f'{r:.0f}' for r in agent_rates)})"
    )
    print(
        f"ratio agent / llama.cpp       : {through / base:7.2f} median, {best_ratio:.2f} best-of"
        "  (goal >= 0.9)"
    )
    cpu_b, cpu_a = statistics.median(base_cpu), statistics.median(agent_cpu)
    print(
        f"CPU per token (all threads)   : llama.cpp {cpu_b * 1e3:.2f} ms, agent process "
        f"{cpu_a * 1e3:.2f} ms -> CPU-bound ratio {cpu_b / cpu_a:.2f}"
    )
    for pace in (420.0, 2000.0):
        cost = serving_cpu_per_token(pace)
        print(
            f"serving path alone, FakeEngine paced at {pace:.0f} tok/s: {cost * 1e6:.0f} us CPU"
            f" per token = {cost * pace:.1%} of one core"
        )
    added = statistics.median(agent_ttft) - statistics.median(base_ttft)
    print(
        f"time to first token           : llama.cpp {statistics.median(base_ttft) * 1e3:.1f} ms,"
        f" agent {statistics.median(agent_ttft) * 1e3:.1f} ms (server adds {added * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
