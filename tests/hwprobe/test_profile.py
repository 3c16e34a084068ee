"""HardwareProfile: JSON round trip, digest and the static engine preference."""

from __future__ import annotations

from hwprobe import HardwareProfile, preferred_engines, probe
from hwprobe.classify import engines_for
from hwprobe.profile import CpuInfo
from tests.hwprobe.roots import SAMPLES


def test_json_round_trip() -> None:
    """model_dump(mode='json') is the contract and validates back to the same profile."""
    profile = probe(SAMPLES / "jetson-nano")
    data = profile.model_dump(mode="json")
    assert set(data) == {
        "schema_version",
        "cpu",
        "memory",
        "board",
        "jetson",
        "accelerators",
        "device_class",
        "engines",
        "warnings",
        "runtime",
    }
    assert HardwareProfile.model_validate(data) == profile


def test_digest_ignores_volatile_fields_only() -> None:
    """Available memory and warnings do not change the digest; hardware does."""
    profile = probe(SAMPLES / "intel-i7-8650u")
    digest = profile.digest()
    assert len(digest) == 16
    moved = profile.model_copy(deep=True)
    moved.memory.available_bytes = 1
    moved.warnings = []
    assert moved.digest() == digest
    bigger = profile.model_copy(update={"cpu": CpuInfo(arch="x86_64", cores=16)})
    assert bigger.digest() != digest
    assert probe(SAMPLES / "jetson-nano").digest() != digest


def test_preferred_engines_by_class() -> None:
    """Jetson/NVIDIA: tensorrt first; Intel GPU/NPU: openvino first; CPUs: llamacpp first."""
    assert preferred_engines(probe(SAMPLES / "jetson-nano"))[0] == "tensorrt"
    assert preferred_engines(probe(SAMPLES / "raspberry-pi-5"))[0] == "llamacpp"
    assert engines_for("intel-npu", "x86_64")[0] == "openvino"
    assert engines_for("nvidia-gpu", "x86_64")[0] == "tensorrt"
    assert engines_for("cpu-x86", "x86_64") == ["llamacpp", "openvino", "onnxruntime"]


def test_32bit_arm_has_no_openvino_or_tensorrt() -> None:
    """Neither OpenVINO nor TensorRT ship for 32-bit ARM."""
    assert engines_for("cpu-arm", "armv7l") == ["llamacpp", "onnxruntime"]
