"""`edgefleet-agent` commands and the settings they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser, main
from agent.config import ConfigError, load_settings


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
