"""`edgefleet-models` run as a real process on a small hand-made model directory."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models import cli
from models.build.pipeline import BuildResult
from models.errors import ModelsError
from models.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process with EDGEFLEET_HOME pointing into the test's tmp dir."""
    env = {**os.environ, "EDGEFLEET_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "models.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 1, result
    assert reason in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_keygen_sign_verify_and_refuse_a_changed_byte(model_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = run("keygen", home=home)
    assert made.returncode == 0, made.stderr
    key, pub = home / "keys" / "signing.key", home / "keys" / "signing.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"public key: {pub.read_text().strip()}" in made.stdout

    signed = run("sign", model_dir, home=home)  # re-sign with the new default key
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith("signed tiny-test:1.0 with key id ")

    ok = run("verify", model_dir, "--trust", pub, home=home)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "OK tiny-test:1.0, 4 files verified\n", "")
    one = run("verify", model_dir, "--trust", pub, "--variant", "gguf-q4_0", home=home)
    assert one.stdout == "OK tiny-test:1.0, 2 files verified\n"

    target = model_dir / "onnx-fp16" / "config.json"
    data = bytearray(target.read_bytes())
    data[3] ^= 0x20
    target.write_bytes(bytes(data))
    assert_refused(
        run("verify", model_dir, "--trust", pub, home=home),
        "file onnx-fp16/config.json: sha256 mismatch (expected ",
    )


def test_verify_refusals_exit_non_zero_with_one_line(model_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    other = tmp_path / "other.key"
    assert run("keygen", "--out", other, home=home).returncode == 0
    assert_refused(
        run("verify", model_dir, "--trust", tmp_path / "other.pub", home=home),
        "signature does not match any trusted key (key id ",
    )
    untrusted = run("verify", model_dir, home=home)
    assert untrusted.returncode == 0 and "warning: no --trust key given" in untrusted.stderr

    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["version"] = "2.0"
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert_refused(run("verify", model_dir, home=home), "the manifest was changed after signing")
    (model_dir / SIGNATURE_FILE).unlink()
    assert_refused(run("verify", model_dir, home=home), "manifest.sig missing: model is unsigned")
    assert_refused(run("verify", tmp_path / "nowhere", home=home), "not a model directory")


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    first = run("keygen", "--out", out, home=tmp_path)
    assert first.returncode == 0
    assert_refused(run("keygen", "--out", out, home=tmp_path), "exists: pass --force")
    again = run("keygen", "--out", out, "--force", home=tmp_path)
    assert again.returncode == 0 and again.stdout != first.stdout


def test_sign_without_a_key_says_how_to_make_one(model_dir: Path, tmp_path: Path) -> None:
    assert_refused(run("sign", model_dir, home=tmp_path), "run `edgefleet-models keygen`")


def test_import_then_list_and_gc(model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    imported = run("import", model_dir, "--store", store, home=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"imported tiny-test:1.0 into {store}\n"
    listed = run("list", "--store", store, home=tmp_path)
    assert listed.stdout == "tiny-test:1.0\tgguf-q4_0, onnx-fp16\n"
    assert run("gc", "--store", store, home=tmp_path).stdout == "freed 0 bytes\n"
    assert run("remove", "tiny-test:1.0", "--store", store, home=tmp_path).returncode == 0
    assert run("list", "--store", store, home=tmp_path).stdout == ""
    assert_refused(
        run("remove", "tiny-test:1.0", "--store", store, home=tmp_path), "is not in the store"
    )
    freed = run("gc", "--store", store, home=tmp_path).stdout
    assert freed.startswith("freed ") and freed != "freed 0 bytes\n"


SUBCOMMANDS = ["keygen", "verify", "sign", "import", "list", "remove", "gc", "build", "reference"]


def test_every_subcommand_has_a_handler() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS) == set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: edgefleet-models {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("models.build.pipeline", ["build", "hf", "--out", "o", "--targets", "onnx"]),
        ("models.reference", ["reference", "tiny", "--out", "o"]),
    ],
)
def test_build_commands_without_the_build_extra_exit_2(
    module: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import` raise ImportError
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == "the build extra is needed: pip install 'edgefleet[build]'\n"


def test_build_passes_targets_and_a_created_key_to_the_pipeline(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[object, ...]] = []

    def build_targets(*args: object, **kwargs: object) -> BuildResult:
        calls.append(args)
        return BuildResult(Manifest.load(model_dir))

    fake = types.ModuleType("models.build.pipeline")
    fake.build_targets = build_targets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.build.pipeline", fake)
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    argv = ["build", "hf", "--out", "o", "--targets", "gguf-q4, onnx", "--name", "n"]
    assert cli.main(argv) == 0
    hf, out, targets, key, name, version = calls[0]
    assert (hf, out, targets, name, version) == (
        Path("hf"),
        Path("o"),
        ["gguf-q4", "onnx"],
        "n",
        None,
    )
    assert isinstance(key, Ed25519PrivateKey)
    assert (tmp_path / "keys" / "signing.key").is_file()
    captured = capsys.readouterr()
    assert captured.out == "built tiny-test:1.0: gguf-q4_0, onnx-fp16 in o\n"
    assert "created signing key" in captured.err


def test_build_errors_exit_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def build_targets(*args: object, **kwargs: object) -> BuildResult:
        raise ModelsError("convert to onnx failed: optimum-cli exited 1; see the log above")

    fake = types.ModuleType("models.build.pipeline")
    fake.build_targets = build_targets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.build.pipeline", fake)
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    assert cli.main(["build", "hf", "--out", "o"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "error: convert to onnx failed: optimum-cli exited 1; see the log above"


def test_build_keep_going_names_what_did_not_build(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, object] = {}

    def build_targets(*args: object, **kwargs: object) -> BuildResult:
        seen.update(kwargs)
        return BuildResult(Manifest.load(model_dir), failed={"onnx": "optimum said no"})

    fake = types.ModuleType("models.build.pipeline")
    fake.build_targets = build_targets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.build.pipeline", fake)
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    assert cli.main(["build", "hf", "--out", "o", "--keep-going", "-v"]) == 0
    assert seen == {"keep_going": True, "verbose": True}
    assert "not built: onnx: optimum said no" in capsys.readouterr().err
