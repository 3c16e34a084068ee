"""The serving processes bench/serving_overhead.py starts and streams from.

The agent (`edgefleet-agent serve` on a GGUF), the agent over a paced FakeEngine (the
serving path's own CPU cost), and llama-cpp-python's bundled server (`python -m
llama_cpp.server`, needs `llama-cpp-python[server]`) on the same GGUF, threads and context.
`served` streams one /v1/completions request from any of them and times it.

On a CPU whose AMX kernels fault (models/llamacpp_amx.py) the agent loads without AMX
repacking by itself; the bundled server runs through `_BUNDLED_SERVER`, which does the same
before llama_cpp.server's own main, so both compare like for like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time, in a small village by the sea, there lived"
THREADS = 2
READY_TIMEOUT_S = 120.0

_FAKE_SERVER = """
import sys, time
from pathlib import Path
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


# llama_cpp.server's main with the agent's AMX guard applied first: argv[1] is the GGUF, the
# rest are the server's own arguments.
_BUNDLED_SERVER = """
import sys
from pathlib import Path
import llama_cpp
from models.llamacpp_amx import avoid_faulting_amx
avoid_faulting_amx(llama_cpp, Path(sys.argv[1]))
from llama_cpp.server.__main__ import main
sys.argv = ["llama_cpp.server", *sys.argv[2:]]
main()
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server process and of the processes it started (the agent runs
    OpenVINO's pipeline in a child)."""
    server = psutil.Process(pid)
    total = sum(server.cpu_times()[:2])
    for child in server.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def bundled_server_command(gguf: Path, server_args: list[str]) -> list[str]:
    """The command running `python -m llama_cpp.server server_args`, AMX-guarded like the agent.

    On a CPU that advertises AMX, the guard's probe (a child process, a few seconds) decides
    whether the model loads without repacking; elsewhere it is plain `-m llama_cpp.server`.
    """
    from models.llamacpp_amx import advertises_amx

    if not advertises_amx():
        return [sys.executable, "-m", "llama_cpp.server", *server_args]
    return [sys.executable, "-c", _BUNDLED_SERVER, str(gguf), *server_args]


def start_agent(model: Path, port: int) -> subprocess.Popen[bytes]:
    """`edgefleet-agent serve` in its own process, waited on until /readyz says ready."""
    env = {
        **os.environ,
        "EDGEFLEET_AGENT_THREADS": str(THREADS),
        "PYTHONPATH": str(REPO),
        "EDGEFLEET_AGENT_DATA_DIR": tempfile.mkdtemp(prefix="ef-bench-"),
    }
    cmd = [sys.executable, "-m", "agent.cli", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--engine", "llamacpp"]
    process = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    return wait_ready(process, f"http://127.0.0.1:{port}/readyz", "the agent")


def start_fake_agent(port: int, token_delay_s: float) -> subprocess.Popen[bytes]:
    """The agent's REST app over a FakeEngine that sleeps `token_delay_s` per token."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _FAKE_SERVER, str(port), str(token_delay_s)]
    process = subprocess.Popen(cmd, env=env, cwd=REPO)
    return wait_ready(process, f"http://127.0.0.1:{port}/readyz", "the FakeEngine agent")


def start_llama_server(gguf: Path, port: int, context: int) -> subprocess.Popen[bytes]:
    """`python -m llama_cpp.server` on the same GGUF, threads and context as the agent.

    Quiet like the agent's engine (`--verbose False`); its stderr goes to a file, which a
    pipe nobody reads would fill and block.
    """
    server_args = ["--model", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    server_args += ["--n_ctx", str(context), "--verbose", "False"]
    server_args += ["--n_threads", str(THREADS), "--n_threads_batch", str(THREADS)]
    log = tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = bundled_server_command(gguf, server_args)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=REPO)
    return wait_ready(
        process, f"http://127.0.0.1:{port}/v1/models", "python -m llama_cpp.server", log
    )


def wait_ready(
    process: subprocess.Popen[bytes], url: str, what: str, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Return `process` once `url` answers 200; exit with its log's tail if it dies or hangs."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    tail = ""
    if log is not None:
        log.seek(0)
        tail = ": " + " | ".join(log.read().decode(errors="replace").strip().splitlines()[-3:])
    hint = " (pip install 'llama-cpp-python[server]')" if "llama_cpp" in what else ""
    sys.exit(f"{what} did not become ready{hint}{tail}")


def context_length(model: Path) -> int:
    """The context the agent gives this model: the manifest's, or the bare .gguf default."""
    from agent.engines.base import LoadOptions
    from models.manifest import MANIFEST_FILE, Manifest

    if (model / MANIFEST_FILE).is_file():
        return Manifest.load(model).context_length
    return LoadOptions().context_length


def served(
    port: int, tokens: int, pid: int, *, llama_server: bool = False
) -> tuple[float, float, int, float]:
    """(decode tok/s, seconds to first token, tokens, server CPU s/token) through SSE.

    One httpx.Client, connected by the /v1/models call before the clock starts: creating a
    client costs 20-40 ms here (SSL context), which is the bench's cost, not the server's.
    llama_cpp.server gets the same request without `model` and `stream_options` (it has one
    model and no usage chunk); it sends one event per token, which is how its tokens count.
    """
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=120) as client:
        model = client.get(url + "/v1/models").json()["data"][0]["id"]
        body: dict[str, Any] = {
            "prompt": PROMPT,
            "max_tokens": tokens,
            "temperature": 0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "stream": True,
        }
        if not llama_server:
            body.update(model=model, stream_options={"include_usage": True})
        cpu = cpu_seconds(pid)
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
                if llama_server and event["choices"][0]["finish_reason"] is None:
                    count += 1
        cpu = cpu_seconds(pid) - cpu
    # SSE events batch tokens, so the first event may hold more than one: count from usage.
    if count < 2 or last <= first:
        raise SystemExit(
            f"only {count} token(s) arrived in one burst: too few to time; use a bigger model "
            "or more --tokens"
        )
    return (count - 1) / (last - first), first - started, count, cpu / count
