"""What scoring the prompt costs: /v1/completions with `echo` and `logprobs` against the same
request without them, on the agent serving a real GGUF (llama.cpp, 2 threads).

Each round sends a prompt of about `--prompt-tokens` tokens with max_tokens 1 three ways:
plain (the prefix cache is cleared by a different prompt first, so the prompt is evaluated
whole), `logprobs: 0` with `echo` (each prompt token's own log-probability), and `logprobs: 5`
with `echo` (five alternatives each). Prints the median wall time of each and the extra per
prompt token. Not a pass/fail test.

    .venv/bin/python bench/prompt_logprobs.py [--model GGUF] [--prompt-tokens 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx
from serving_processes import REPO, start_agent  # bench/ is on sys.path when this script runs

sys.path.insert(0, str(REPO))

from tests.support.mosquitto import free_port  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxes".split()


def _prompt(n_words: int, salt: int) -> str:
    return f"{salt}: " + " ".join(WORDS[(i * 7 + salt) % len(WORDS)] for i in range(n_words))


def main() -> None:
    """Start the agent, time the three request kinds round by round, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        from models.real_models import SMOLLM2, fetch_gguf

        args.model = fetch_gguf(SMOLLM2)
    port = free_port()
    agent = start_agent(args.model, port)
    url = f"http://127.0.0.1:{port}/v1/completions"
    kinds = {"plain": {}, "echo logprobs 0": {"echo": True, "logprobs": 0}}
    kinds["echo logprobs 5"] = {"echo": True, "logprobs": 5}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    tokens = 0
    try:
        with httpx.Client(timeout=600) as client:
            model = client.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"]
            for round_ in range(args.rounds + 1):  # the first round warms up, not counted
                for index, (kind, extra) in enumerate(kinds.items()):
                    prompt = _prompt(args.prompt_tokens * 3 // 4, round_ * 10 + index)
                    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
                    started = time.perf_counter()
                    reply = client.post(url, json={**body, **extra})
                    elapsed = time.perf_counter() - started
                    reply.raise_for_status()
                    tokens = reply.json()["usage"]["prompt_tokens"]
                    if round_:
                        times[kind].append(elapsed)
    finally:
        agent.terminate()
        agent.wait(30)
    print(f"model {args.model.name}, prompt {tokens} tokens, max_tokens 1, {args.rounds} rounds")
    plain = statistics.median(times["plain"])
    for kind, values in times.items():
        median = statistics.median(values)
        extra_ms = (median - plain) * 1000 / max(tokens, 1)
        print(f"{kind:>16}: {median * 1000:8.1f} ms   (+{extra_ms:.2f} ms a prompt token)")


if __name__ == "__main__":
    main()
