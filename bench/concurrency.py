"""Many streaming clients at once: the agent, llama-cpp-python's server, llama.cpp's llama-server.

One run, the same GGUF, threads, slots and context for each server, started one after the
other (never two at once, they would share the cores): 1, 2, 4, 8, 16 concurrent streaming
chat completions of `--tokens` tokens, greedy; aggregate tok/s, per-stream decode tok/s, TTFT
p50/p99, and the server process's CPU time per streamed token (user + system, all its
threads: on a shared machine whose load comes and goes this compares the servers' work more
steadily than wall-clock throughput does); then a multi-turn chat whose first turn is about
1,000 tokens, with another client's request between the turns, to show what the second
turn's TTFT gains from a prefix cache. llama-server comes from scripts/build_llama_server.sh
(llama.cpp from the installed llama-cpp-python's own source). Prints a table; not a pass/fail
test.

On a CPU that advertises AMX but faults in ggml's AMX kernels (a VM; models/llamacpp_amx.py)
the agent loads without AMX repacking; so, for a like-for-like run, does llama-server
(`--no-repack`) and the bundled server (through the same guard). The table's header says
whether repacking was off.

`--engine openvino` runs the agent on an OpenVINO model directory instead (default: SmolLM2
built to `openvino-int8` by the project's builder, cached; tests/support/real_openvino.py),
through openvino-genai's ContinuousBatchingPipeline; llama-server and the bundled server do
not apply there, so next to the agent it drives the same pipeline directly
(`bench/openvino_pipeline.py`): what the library itself does on this machine. Both print
the 8-vs-1-client aggregate ratio.

    .venv/bin/python bench/concurrency.py [--servers agent,llama-cpp-python,llama-server]
    .venv/bin/python bench/concurrency.py --engine openvino [--model DIR] [--servers agent]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.openvino_pipeline import NAME as DIRECT_NAME  # noqa: E402
from bench.openvino_pipeline import run_direct  # noqa: E402
from bench.serving_processes import (  # noqa: E402
    bundled_server_command,
    cpu_seconds,
    wait_ready,
)
from models.llamacpp_amx import amx_faults  # noqa: E402

SYSTEM = "You are a helpful assistant."
QUESTIONS = (
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a day in the life of a lighthouse keeper.",
    "Write a long letter from a sailor to his family.",
    "Explain how plants turn sunlight into food, step by step.",
    "Tell a long tale about a clockmaker and a talking cat.",
    "Describe the history of a small mountain village.",
    "Write a detailed guide to planting a vegetable garden.",
)
# About 1,000 tokens of context for the multi-turn chat.
DOCUMENT = " ".join(
    f"Note {i}: the warehouse in district {i % 7} stores {i * 13 % 97} crates of item "
    f"{i * 31 % 211}, checked on day {i % 28 + 1} by inspector number {i * 17 % 53}."
    for i in range(30)
)


@dataclass(frozen=True)
class Stream:
    """One streamed completion as a client saw it."""

    tokens: int
    ttft_s: float
    decode_s: float  # first to last token
    ok: bool


@dataclass(frozen=True)
class Server:
    """How to start one server and what its requests need."""

    name: str
    start: Callable[[int], subprocess.Popen[bytes]]
    needs_model: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
    ]


async def _stream(
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], tokens: int, model: str
) -> tuple[Stream, str]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    events = usage = 0
    text: list[str] = []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                await reply.aread()
                return Stream(0, 0.0, 0.0, False), ""
            async for line in reply.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    usage = int(event["usage"].get("completion_tokens") or 0)
                choices = event.get("choices") or []
                delta = (choices[0].get("delta") or {}).get("content") if choices else None
                if delta:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    events += 1
                    text.append(delta)
    except httpx.HTTPError:
        return Stream(0, 0.0, 0.0, False), ""
    count = usage or events  # servers that send no usage send one event per token
    return Stream(count, first - started if first else 0.0, last - first, first > 0), "".join(text)


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def _round(url: str, clients: int, tokens: int, model: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_stream(client, url, _messages(i), tokens, model) for i in range(clients))
        )
        wall = time.perf_counter() - started
    streams = [s for s, _ in results if s.ok]
    per_stream = [(s.tokens - 1) / s.decode_s for s in streams if s.tokens > 1 and s.decode_s > 0]
    ttfts = [s.ttft_s for s in streams]
    return {
        "clients": clients,
        "tokens": sum(s.tokens for s in streams),
        "failed": clients - len(streams),
        "aggregate": sum(s.tokens for s in streams) / wall,
        "per_stream": statistics.mean(per_stream) if per_stream else 0.0,
        "ttft_p50": _pct(ttfts, 0.5),
        "ttft_p99": _pct(ttfts, 0.99),
    }


async def _multi_turn(url: str, model: str) -> tuple[float, float]:
    """TTFT of a ~1,000-token first turn and of its follow-up, another request in between."""
    async with httpx.AsyncClient(timeout=600) as client:
        question = f"{DOCUMENT}\n\nWhich district stores item 62?"
        turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        first, reply = await _stream(client, url, turn, 32, model)
        await _stream(client, url, _messages(3), 16, model)  # someone else in between
        turn += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And who checked it?"},
        ]
        second, _ = await _stream(client, url, turn, 32, model)
    return first.ttft_s, second.ttft_s


def _model_id(url: str) -> str:
    return str(httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"])


def run_server(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, warm it up, run every concurrency level and the multi-turn chat."""
    port = _free_port()
    process = server.start(port)
    url = f"http://127.0.0.1:{port}"
    try:
        model = _model_id(url)
        asyncio.run(_round(url, 1, 8, model))  # warm-up
        rounds = []
        for n in args.clients:
            before = cpu_seconds(process.pid)
            rounds.append(asyncio.run(_round(url, n, args.tokens, model)))
            used = cpu_seconds(process.pid) - before
            rounds[-1]["cpu_ms_per_token"] = 1000 * used / max(rounds[-1]["tokens"], 1)
            print(
                f"  {server.name} {n} clients: {rounds[-1]['aggregate']:.1f} tok/s aggregate",
                file=sys.stderr,
                flush=True,
            )
        turns = asyncio.run(_multi_turn(url, model))
        return {"server": server.name, "rounds": rounds, "turns": turns}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _agent(args: argparse.Namespace) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "EDGEFLEET_AGENT_THREADS": str(args.threads),
            "EDGEFLEET_AGENT_CONTEXT_LENGTH": str(args.context),
            "EDGEFLEET_AGENT_QUEUE_DEPTH": "64",
            "EDGEFLEET_AGENT_DATA_DIR": tempfile.mkdtemp(prefix="ef-bench-"),
            "EDGEFLEET_AGENT_BATCH_INVARIANT": "false" if args.cpu_defaults else "true",
        }
        cmd = [
            sys.executable,
            "-m",
            "agent.cli",
            "serve",
            "--model",
            str(args.model),
            "--port",
            str(port),
            "--engine",
            args.engine,
            "--parallel",
            str(args.parallel),
        ]
        process = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
        return wait_ready(process, f"http://127.0.0.1:{port}/readyz", "the agent")

    return start


def _llama_cpp_python(args: argparse.Namespace) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        server_args = [
            "--model",
            str(args.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(args.context),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--verbose",
            "False",
        ]
        log = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = bundled_server_command(args.model, server_args)
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=REPO)
        return wait_ready(process, f"http://127.0.0.1:{port}/v1/models", "llama_cpp.server", log)

    return start


def _llama_server(
    args: argparse.Namespace, binary: Path
) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        # -c is the whole KV cache, split over -np slots: the same per-slot context as ours
        cmd = [
            str(binary),
            "-m",
            str(args.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-t",
            str(args.threads),
            "-tb",
            str(args.threads),
            "-np",
            str(args.parallel),
            "-c",
            str(args.context * args.parallel),
            "--no-webui",
        ]
        if args.no_repack:
            cmd.append("--no-repack")
        log = tempfile.TemporaryFile()
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        return wait_ready(process, f"http://127.0.0.1:{port}/health", "llama-server", log)

    return start


def _find_llama_server(path: str | None) -> Path | None:
    if path:
        return Path(path)
    env = {**os.environ, "EDGEFLEET_BUILD_ONLY_IF_CACHED": "1"}
    script = str(REPO / "scripts" / "build_llama_server.sh")
    done = subprocess.run([script], capture_output=True, text=True, env=env)
    found = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    return found if found is not None and found.is_file() else None


def _has_option(binary: Path, option: str) -> bool:
    """Whether the binary's --help lists the option."""
    done = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    return option in {word.strip(",") for word in (done.stdout + done.stderr).split()}


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| server | clients | aggregate tok/s | per-stream tok/s | TTFT p50 s | TTFT p99 s "
        "| CPU ms/token | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for r in result["rounds"]:
            lines.append(
                f"| {result['server']} | {r['clients']} | {r['aggregate']:.1f} | "
                f"{r['per_stream']:.1f} | {r['ttft_p50']:.2f} | {r['ttft_p99']:.2f} | "
                f"{r['cpu_ms_per_token']:.1f} | {r['failed']} |"
            )
    lines += [
        "",
        "| server | turn 1 TTFT s (~1,000 tokens) | turn 2 TTFT s | turn 2 / turn 1 |",
        "|---|---|---|---|",
    ]
    for result in results:
        if result["turns"] is None:
            continue
        one, two = result["turns"]
        ratio = f"{two / one:.0%}" if one > 0 else "-"
        lines.append(f"| {result['server']} | {one:.2f} | {two:.2f} | {ratio} |")
    lines.append("")
    lines += [f"{r['server']}: 8 clients / 1 client aggregate {_ratio(r)}" for r in results]
    return "\n".join(lines)


def _ratio(result: dict[str, Any]) -> str:
    """8-client over 1-client aggregate tok/s, or why there is none."""
    by_clients = {r["clients"]: r["aggregate"] for r in result["rounds"]}
    if not by_clients.get(1) or 8 not in by_clients:
        return "- (needs --clients with 1 and 8)"
    return f"{by_clients[8] / by_clients[1]:.2f}x"


def _gguf_servers(args: argparse.Namespace) -> list[Server]:
    # the agent decides this for itself; the others are told, so all run the same kernels
    args.no_repack = amx_faults(args.model)
    servers: list[Server] = []
    for name in args.servers.split(","):
        if name == "agent":
            servers.append(Server(name, _agent(args)))
        elif name == "llama-cpp-python":
            servers.append(Server(name, _llama_cpp_python(args)))
        elif name == "llama-server":
            binary = _find_llama_server(args.llama_server)
            if binary is None:
                print("llama-server: not built; run scripts/build_llama_server.sh (about 10 min)")
                continue
            if args.no_repack and not _has_option(binary, "--no-repack"):
                print(f"llama-server: {binary} has no --no-repack and would fault here; skipped")
                continue
            servers.append(Server(name, _llama_server(args, binary)))
    return servers


def _openvino_run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The agent on the OpenVINO model, then the pipeline driven directly; rows and header."""
    names = args.servers.split(",")
    unknown = set(names) - {"agent", DIRECT_NAME.split()[0]}
    if unknown:
        sys.exit(f"--engine openvino runs 'agent' and 'openvino-genai', not {sorted(unknown)}")
    results = []
    if "agent" in names:
        print("running agent ...", file=sys.stderr, flush=True)
        results.append(run_server(Server("agent", _agent(args)), args))
    if "openvino-genai" in names:
        print(f"running {DIRECT_NAME} ...", file=sys.stderr, flush=True)
        results.append(
            run_direct(
                _variant_dir(args.model),
                clients=args.clients,
                tokens=args.tokens,
                threads=args.threads,
                slots=args.parallel,
                batch_invariant=not args.cpu_defaults,
                messages=_messages,
                report=lambda line: print(line, file=sys.stderr, flush=True),
            )
        )
    header = (
        f"{args.model.name} (openvino-int8, ContinuousBatchingPipeline on CPU), {args.threads} "
        f"threads, {args.parallel} slots, {args.tokens} tokens a stream, greedy, "
        + ("OpenVINO's CPU defaults" if args.cpu_defaults else "batch-invariant CPU math")
    )
    return results, header


def _variant_dir(model: Path) -> Path:
    """The IR directory of a signed model directory's OpenVINO variant (or `model` itself)."""
    from agent.selection import variant_path
    from models.manifest import MANIFEST_FILE, Manifest

    if not (model / MANIFEST_FILE).is_file():
        return model
    variant = next(v for v in Manifest.load(model).variants if v.format == "openvino")
    return variant_path(model, variant)


def main() -> None:
    """Parse the options, run each server in turn, print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        help="GGUF (default: SmolLM2-135M-Instruct Q4_1); with --engine openvino a model "
        "directory with an OpenVINO variant (default: SmolLM2 built to openvino-int8)",
    )
    parser.add_argument(
        "--engine", choices=("llamacpp", "openvino"), default="llamacpp", help="the agent's engine"
    )
    parser.add_argument(
        "--servers",
        help="default: agent,llama-cpp-python,llama-server (llamacpp), agent,openvino-genai",
    )
    parser.add_argument("--clients", default="1,2,4,8,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8, help="slots (agent, llama-server)")
    parser.add_argument("--context", type=int, default=2048, help="context per slot (a GGUF)")
    parser.add_argument("--llama-server", help="llama-server binary (default: the cached build)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--cpu-defaults",
        action="store_true",
        help="--engine openvino: OpenVINO's fastest CPU math (bf16 where the CPU has it, int8 "
        "activations) for the agent and the direct pipeline, instead of the agent's default "
        "batch-invariant f32 (agent setting batch_invariant)",
    )
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if args.engine == "openvino":
        args.servers = args.servers or "agent,openvino-genai"
        if args.model is None:
            from tests.support.real_openvino import smollm2_openvino

            args.model = smollm2_openvino()
        results, header = _openvino_run(args)
    else:
        args.servers = args.servers or "agent,llama-cpp-python,llama-server"
        if args.model is None:
            from models.real_models import SMOLLM2, fetch_gguf

            args.model = fetch_gguf(SMOLLM2)
        results = []
        for server in _gguf_servers(args):
            print(f"running {server.name} ...", file=sys.stderr, flush=True)
            results.append(run_server(server, args))
        header = (
            f"{args.model.name}, {args.threads} threads, {args.parallel} slots x {args.context} "
            f"tokens, {args.tokens} tokens a stream, greedy, AMX repacking "
            f"{'off (its kernels fault on this CPU; every server)' if args.no_repack else 'on'}"
        )
    print(header + "\n")
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
