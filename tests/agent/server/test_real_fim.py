"""Fill in the middle (`suffix`) on real GGUFs, through the real `openai` and `ollama` packages.

Neither SmolLM2 nor Gemma 3 has FIM tokens (checked: llama_vocab_fim_pre/suf/mid are -1, and
`<fim_prefix>` is six ordinary tokens), so both answer 400. A copy of SmolLM2 whose GGUF names
three of its control tokens as FIM prefix/suffix/middle (`<repo_name>`, `<reponame>`,
`<filename>`) stands in for a code model: the prompt must be built from those tokens.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.server.serve import RunningServer
from tests.agent.samples import SMOLLM2
from tests.agent.server.conftest import serve_model

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

FIM_IDS = {"fim_pre": 3, "fim_suf": 4, "fim_mid": 6}
FIM_MODEL = "smollm2-fim"


@pytest.fixture(scope="module")
def fim_server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    out = tmp_path_factory.mktemp("fim") / f"{FIM_MODEL}.gguf"
    names = [
        arg
        for name, token in FIM_IDS.items()
        for arg in ("--special-token-by-id", name, str(token))
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(smollm2_gguf),
            str(out),
            *names,
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    with serve_model(out, context_length=512, parallel=1) as running:
        yield running


def test_completions_suffix_builds_the_fim_prompt(fim_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{fim_server.url}/v1", api_key="unused", timeout=300)
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    reply = client.completions.create(
        model=FIM_MODEL, prompt=prefix, suffix=suffix, max_tokens=8, temperature=0
    )
    tokens = httpx.post(  # the prompt is the three FIM tokens plus both texts, nothing else
        f"{fim_server.url}/v1/completions",
        json={"model": FIM_MODEL, "prompt": prefix + suffix, "max_tokens": 1, "temperature": 0},
        timeout=300,
    ).json()["usage"]["prompt_tokens"]
    assert reply.usage.prompt_tokens in (tokens + 3, tokens + 4)  # + 3 FIM tokens (± a merge)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert "<filename>" not in reply.choices[0].text


def test_ollama_generate_suffix(fim_server: RunningServer) -> None:
    client = ollama.Client(host=fim_server.url, timeout=300)
    reply = client.generate(
        model=FIM_MODEL,
        prompt="x = ",
        suffix="\nprint(x)\n",
        options={"temperature": 0, "num_predict": 6},
    )
    assert reply.done and (reply.prompt_eval_count or 0) > 3


def test_a_model_without_fim_tokens_refuses_suffix(smollm2_server: RunningServer) -> None:
    reply = httpx.post(
        f"{smollm2_server.url}/v1/completions",
        json={"model": SMOLLM2, "prompt": "x = ", "suffix": "\n", "max_tokens": 4},
        timeout=120,
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "suffix" and "fill-in-the-middle" in error["message"]
    answered = httpx.post(
        f"{smollm2_server.url}/api/generate",
        json={"model": SMOLLM2, "prompt": "x = ", "suffix": "\n", "stream": False},
        timeout=120,
    )
    assert answered.status_code == 400 and "suffix" in answered.json()["error"]
