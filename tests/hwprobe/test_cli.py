"""The hwprobe command line, run as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hwprobe.__main__ import main
from tests.hwprobe.roots import SAMPLES, write_file

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LIBRARIES = ("llama_cpp", "openvino", "onnxruntime", "tensorrt", "pynvml")


def test_json_for_a_fake_root_imports_no_runtime_library() -> None:
    """`python -m hwprobe --json --root` prints the profile; -X importtime lists every import."""
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "hwprobe",
            "--json",
            "--root",
            str(SAMPLES / "jetson-nano"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(result.stdout)
    assert data["device_class"] == "jetson"
    assert data["jetson"] == {
        "model": "NVIDIA Jetson Nano Developer Kit",
        "soc": "tegra210",
        "l4t": "32.7.6",
        "jetpack": "4.6.6",
    }
    assert data["engines"][0] == "tensorrt"
    assert data["runtime"] is None
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "hwprobe.probe" in imported  # proves the import log is being read
    assert not {m.split(".")[0] for m in imported} & set(RUNTIME_LIBRARIES)


def test_garbage_root_gives_no_traceback(tmp_path: Path) -> None:
    """A root full of junk still prints valid JSON and exits 0."""
    write_file(tmp_path, "proc/cpuinfo", bytes(range(256)))
    (tmp_path / "proc" / "meminfo").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hwprobe", "--json", "--root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["warnings"]


def test_summary_for_a_sample(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json a readable summary comes out."""
    assert main(["--root", str(SAMPLES / "raspberry-pi-5")]) == 0
    out = capsys.readouterr().out
    assert "device class : cpu-arm" in out
    assert "Raspberry Pi 5 Model B Rev 1.0" in out
    assert "digest" in out


def test_help_explains_root_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--help names the options."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--root DIR" in out
    assert "--json" in out


def test_missing_root_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A root that does not exist exits 2 and says what to pass."""
    assert main(["--root", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
