"""The hardware panel: hwprobe profiles as readable rows; garbage never raises."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.dashboard.hardware import hardware_rows
from hwprobe import probe

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hw"


def test_a_jetson_profile_reads_as_a_person_would_say_it() -> None:
    profile = probe(FIXTURES / "jetson-nano", runtime=False).model_dump(mode="json")
    rows = dict(hardware_rows(profile))
    assert "aarch64" in rows["CPU"]
    assert "tegra210" in rows["Jetson"] and "JetPack 4.6" in rows["Jetson"]
    assert rows["Engine preference"].startswith("tensorrt >")
    assert "nvidia-jetson" in rows["Accelerators"]
    assert "Memory" not in rows  # the sample has no meminfo: unknown, and a warning says so
    assert "meminfo" in rows["Warning"]


def test_runtime_engines_list_only_what_is_installed() -> None:
    profile = {
        "cpu": {"arch": "x86_64", "model": "Core i7", "cores": 8, "features": ["avx2"]},
        "runtime": {
            "engines": {
                "llamacpp": {"installed": True, "version": "0.3.36", "devices": ["cpu"]},
                "tensorrt": {"installed": False},
            }
        },
    }
    profile["memory"] = {"total_bytes": 8 * 1024**3, "available_bytes": 6 * 1024**3}
    rows = dict(hardware_rows(profile))
    assert rows["CPU"] == "Core i7 (x86_64, 8 cores)"
    assert rows["Memory"] == "8.0 GiB, 6.0 GiB available"
    assert rows["ISA"] == "avx2"
    assert rows["Engines installed"] == "llamacpp 0.3.36 on cpu"
    assert rows["Accelerators"] == "none"


def test_whatever_a_device_sends_gives_rows_not_errors() -> None:
    for junk in (
        {},
        None,
        {"cpu": "x"},
        {"memory": {"total_bytes": "lots"}},
        {"accelerators": ["gpu", None]},
        {"jetson": 3, "warnings": ["w"]},
        json.loads('{"runtime": {"engines": [1, 2]}}'),
    ):
        assert isinstance(hardware_rows(junk), list)
