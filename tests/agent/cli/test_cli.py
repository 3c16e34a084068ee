"""`edgefleet-agent` commands and the settings they read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.cli import build_parser, main
from agent.config import ConfigError, load_settings
from agent.server.serve import free_port
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EDGEFLEET_AGENT_CONFIG", "EDGEFLEET_AGENT_PORT", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGEFLEET_AGENT_DATA_DIR", str(tmp_path / "data"))


@pytest.mark.parametrize("command", ["serve", "probe", "run", "bench", "explain", "models"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args([command, "--help"])
    assert caught.value.code == 0
    assert "usage: edgefleet-agent " + command in capsys.readouterr().out


def test_explain_lists_the_candidates(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and "tensorrt" in out


def test_explain_benchmark_engines_measures_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    command, env = agent_command(
        "explain", "--benchmark-engines", str(tiny_model_dir), tmp_path=tmp_path
    )
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "chosen by benchmark" in done.stdout and "tok/s]" in done.stdout
    cached = json.loads((tmp_path / "data" / "engine-benchmarks.json").read_text())
    [entry] = cached.values()
    assert entry["tokens_per_s"]


def test_bench_times_every_candidate(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(tiny_model_dir), "--tokens", "4"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows and all("tok/s" in row or "failed:" in row for row in rows)
    assert any("tok/s" in row for row in rows)


def test_run_streams_a_reply(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    code = main(
        [
            "run",
            str(tiny_model_dir),
            "Once upon a time",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--engine",
            "llamacpp",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and captured.out.strip()
    assert "tok/s" in captured.err and "llamacpp" in captured.err


def test_models_import_list_rm(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", str(tiny_model_dir)]) == 0
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    ref = next(line for line in listed.splitlines() if line.startswith("edgefleet-ref-tiny:"))
    assert main(["models", "rm", ref]) == 0
    assert main(["models", "list"]) == 0
    assert ref not in capsys.readouterr().out.replace(f"removed {ref}", "")


def test_unknown_model_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "no-such-model"]) == 2
    assert "neither a path nor a model in the store" in capsys.readouterr().err


def test_settings_layers_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nqueue_depth = 3\ntypo = 1\n')
    monkeypatch.setenv("EDGEFLEET_AGENT_PORT", "9002")
    settings = load_settings(config)
    assert (settings.port, settings.host, settings.queue_depth) == (9002, "0.0.0.0", 3)
    assert load_settings(config, port=9003).port == 9003
    assert "unknown setting 'typo'" in caplog.text


def test_json_config_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "agent.json"
    good.write_text('{"api_key": "k", "keep_alive": "5m"}')
    assert load_settings(good).api_key == "k"
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_data_dir_follows_systemd_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_AGENT_DATA_DIR")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edgefleet")
    assert load_settings().data_dir == Path("/var/lib/edgefleet")


def agent_command(*args: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The real `edgefleet-agent` process, with its state under tmp_path."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "EDGEFLEET_AGENT_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("NOTIFY_SOCKET", None)
    return [sys.executable, "-m", "agent.cli", *args], env


def serve_and_exit(model: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command, env = agent_command(
        "serve", "--model", model, "--port", str(free_port()), tmp_path=tmp_path
    )
    return subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_serve_refuses_a_missing_model_path(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    done = serve_and_exit(str(missing), tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edgefleet-agent: model path {missing} does not exist; pass a model directory from "
        "`edgefleet-agent models list` or a .gguf file"
    ]
    assert not (tmp_path / "data" / "store").exists()  # a path is not looked up in the store


def test_serve_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"<html>404 not found</html>")
    done = serve_and_exit(str(corrupt), tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "is not a GGUF model" in line and "download or export it again" in line
    assert "Traceback" not in done.stderr


def test_serve_refuses_a_directory_without_a_manifest(tmp_path: Path) -> None:
    done = serve_and_exit(str(tmp_path), tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "neither a model directory" in line


def test_a_gguf_that_fails_to_load_is_reported_by_readyz(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 60)
    port = free_port()
    command, env = agent_command(
        "serve", "--model", str(truncated), "--port", str(port), tmp_path=tmp_path
    )
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/readyz"

    def failed() -> bool:
        try:
            return bool(httpx.get(url).json()["error"])
        except httpx.TransportError:
            return False

    try:
        wait_until(failed, timeout=60)
        answer = httpx.get(url)
        body = answer.json()
        assert answer.status_code == 503 and body["status"] == "empty"
        assert "cannot load" in body["error"] and "truncated.gguf" in body["error"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "model load failed" in stderr and "Traceback" not in stderr
