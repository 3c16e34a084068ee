"""From hardware facts to a device class and the static engine preference."""

from __future__ import annotations

from hwprobe.profile import Accelerator, DeviceClass, EngineName, HardwareProfile, JetsonInfo

_X86 = ("x86_64", "i686")
# Best first. OpenVINO runs on x86 and 64-bit ARM CPUs, but on ARM it trails ONNX Runtime.
_ENGINES: dict[DeviceClass, list[EngineName]] = {
    "jetson": ["tensorrt", "llamacpp", "onnxruntime"],
    "nvidia-gpu": ["tensorrt", "llamacpp", "onnxruntime", "openvino"],
    "intel-igpu": ["openvino", "llamacpp", "onnxruntime"],
    "intel-npu": ["openvino", "llamacpp", "onnxruntime"],
    "cpu-x86": ["llamacpp", "openvino", "onnxruntime"],
    "cpu-arm": ["llamacpp", "onnxruntime", "openvino"],
}


def device_class(
    arch: str | None,
    jetson: JetsonInfo | None,
    accelerators: list[Accelerator],
    *,
    arm_hint: bool = False,
) -> DeviceClass:
    """Pick the class that decides engines: Jetson, NVIDIA GPU, Intel GPU, Intel NPU, then CPU.

    An Intel discrete (Arc) GPU counts as intel-igpu: both run OpenVINO's GPU plugin. When
    the architecture is unknown, ``arm_hint`` (a device tree exists) decides cpu-arm.
    """
    kinds = {a.kind for a in accelerators}
    if jetson is not None or "nvidia-jetson" in kinds:
        return "jetson"
    if "nvidia-gpu" in kinds:
        return "nvidia-gpu"
    if kinds & {"intel-igpu", "intel-dgpu"}:
        return "intel-igpu"
    if "intel-npu" in kinds:
        return "intel-npu"
    if arch in _X86:
        return "cpu-x86"
    if arch is not None or arm_hint:
        return "cpu-arm"
    return "cpu-x86"


def engines_for(klass: DeviceClass, arch: str | None) -> list[EngineName]:
    """Static engine preference for a device class, best first."""
    engines = list(_ENGINES[klass])
    if arch in ("armv7l", "armv6l"):
        # No OpenVINO or TensorRT builds exist for 32-bit ARM.
        engines = [e for e in engines if e not in ("openvino", "tensorrt")]
    return engines


def preferred_engines(profile: HardwareProfile) -> list[str]:
    """The engines worth trying on this hardware, most preferred first."""
    return list(engines_for(profile.device_class, profile.cpu.arch))
