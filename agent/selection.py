"""Pick the variant and engine a model should run with on this device, and say why.

Every (variant, engine) pair of the manifest is judged against hwprobe's HardwareProfile (the
typed model: a renamed field is a type error here) and the installed engines: rejected with a
reason, or accepted and ranked by hwprobe's static engine preference. Memory is checked against the
manifest's `memory_bytes`, so nothing is downloaded that cannot run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import SelectionError
from hwprobe.profile import EngineRuntime, HardwareProfile
from models.manifest import Manifest, Variant

GIB = 1 << 30
MIB = 1 << 20
# Need = memory_bytes x MEMORY_FACTOR + RUNTIME_OVERHEAD_BYTES. The factor covers allocator
# slack and activations the manifest's estimate leaves out; the overhead covers the engine
# runtime and the agent process. Building a TensorRT plan on the device takes more again.
MEMORY_FACTOR = 1.15
RUNTIME_OVERHEAD_BYTES = 256 * MIB
TRT_BUILD_FACTOR = 1.5
# Within one engine: smaller quantized weights first; float16 first on GPUs, float32 on CPUs.
_PRECISION_CPU = ("q4_k_m", "q4_0", "int8", "q8_0", "f32", "fp32", "f16", "fp16")
_PRECISION_GPU = ("q4_k_m", "q4_0", "int8", "q8_0", "f16", "fp16", "f32", "fp32")
_NVIDIA = ("nvidia-gpu", "nvidia-jetson")


@dataclass(frozen=True)
class Candidate:
    """One (variant, engine) pair and the verdict on it."""

    variant_id: str
    engine: str
    device: str
    accepted: bool
    reason: str
    need_bytes: int = 0


@dataclass(frozen=True)
class Selection:
    """The chosen variant, engine and device, with every candidate ranked or rejected."""

    model_ref: str
    variant_id: str
    engine: str
    device: str
    candidates: list[Candidate]
    decided_by: str = "static preference"
    tokens_per_s: dict[str, float] = field(default_factory=dict)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def memory_need_bytes(estimate: int, engine: str = "") -> int:
    """Memory a model of `estimate` bytes needs on `engine`, margins included."""
    factor = MEMORY_FACTOR * (TRT_BUILD_FACTOR if engine == "tensorrt" else 1.0)
    return int(estimate * factor) + RUNTIME_OVERHEAD_BYTES


def required_bytes(variant: Variant, engine: str) -> int:
    """Memory a variant needs on this engine, margins included."""
    return memory_need_bytes(variant.memory_bytes, engine)


def engine_runtime(engine: str, profile: HardwareProfile) -> EngineRuntime | None:
    """What hwprobe found about one engine on the live system (None on a fake root)."""
    return profile.runtime.engines.get(engine) if profile.runtime is not None else None


def _kinds(profile: HardwareProfile) -> set[str]:
    return {a.kind for a in profile.accelerators}


def engine_device(engine: str, profile: HardwareProfile) -> str:
    """The device an engine would run on here: CPU, GPU or NPU."""
    klass = profile.device_class
    kinds = _kinds(profile)
    runtime = engine_runtime(engine, profile)
    devices = {d.upper() for d in (runtime.devices if runtime and runtime.devices else [])}
    providers = set(runtime.providers if runtime and runtime.providers else [])
    if engine == "tensorrt":
        return "GPU"
    if engine == "openvino":
        if klass == "intel-igpu" and (not devices or "GPU" in devices):
            return "GPU"
        if klass == "intel-npu" and (not devices or "NPU" in devices):
            return "NPU"
        return "CPU"
    if engine == "llamacpp":
        return "GPU" if kinds & set(_NVIDIA) and "GPU" in devices else "CPU"
    gpu_providers = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    return "GPU" if kinds & set(_NVIDIA) and providers & gpu_providers else "CPU"


def _gpu_sizes(profile: HardwareProfile, kinds: tuple[str, ...]) -> list[int]:
    return [a.memory_bytes for a in profile.accelerators if a.kind in kinds and a.memory_bytes]


def _available(engine: str, device: str, profile: HardwareProfile) -> int | None:
    """Bytes free where the weights go: a discrete NVIDIA GPU's memory, else system memory."""
    if device == "GPU" and profile.device_class == "nvidia-gpu":
        sizes = _gpu_sizes(profile, ("nvidia-gpu",))
        if sizes:
            return max(sizes)
    return profile.memory.available_bytes


def gpu_memory_budget(engine: str, device: str, profile: HardwareProfile) -> int | None:
    """GPU bytes an engine may fill here; None when it runs on no GPU, -1 when size unknown."""
    if engine != "llamacpp" or not device.startswith("GPU"):
        return None
    if profile.device_class == "jetson":  # the GPU shares system memory
        value = profile.memory.available_bytes
        return value if value is not None else -1
    sizes = _gpu_sizes(profile, _NVIDIA)
    return max(sizes) if sizes else -1


def _judge(
    variant: Variant, engine: str, profile: HardwareProfile, installed: Mapping[str, str]
) -> Candidate:
    klass = profile.device_class
    device = engine_device(engine, profile)
    kinds = _kinds(profile)

    def reject(reason: str, need: int = 0) -> Candidate:
        return Candidate(variant.id, engine, device, False, reason, need)

    if engine == "tensorrt" and not kinds & set(_NVIDIA) and klass not in ("jetson", "nvidia-gpu"):
        return reject("no NVIDIA GPU")
    if engine not in profile.engines:
        return reject(f"engine {engine} is not suited to {klass} (hwprobe)")
    if engine not in installed:
        return reject(f"engine {engine} not installed")
    need = required_bytes(variant, engine)
    available = _available(engine, device, profile)
    if available is not None and need > available and engine == "llamacpp" and device == "GPU":
        # llama.cpp keeps the layers that do not fit the GPU in system memory.
        in_memory = _available(engine, "CPU", profile)
        if in_memory is None or need <= in_memory:
            why = f"partial GPU offload: needs {_gib(need)}, {_gib(available)} of GPU memory"
            return Candidate(variant.id, engine, "GPU (partial)", True, why, need)
        available = in_memory
    if available is not None and need > available:
        return reject(f"needs {_gib(need)}, {_gib(available)} available", need)
    return Candidate(variant.id, engine, device, True, "fits", need)


def _rank_key(c: Candidate, order: list[str], variants: Mapping[str, Variant]) -> tuple[int, int]:
    precisions = _PRECISION_GPU if c.device == "GPU" else _PRECISION_CPU
    precision = variants[c.variant_id].precision
    return order.index(c.engine), precisions.index(precision) if precision in precisions else 99


def select_variant(
    manifest: Manifest,
    profile: HardwareProfile,
    installed: Mapping[str, str],
    *,
    prefer: str | None = None,
) -> Selection:
    """Best (variant, engine, device) for this hardware; SelectionError listing every reason."""
    order: list[str] = list(profile.engines)
    variants = {v.id: v for v in manifest.variants}
    judged = [_judge(v, e, profile, installed) for v in manifest.variants for e in v.engines]
    accepted = sorted(
        (c for c in judged if c.accepted), key=lambda c: _rank_key(c, order, variants)
    )
    if prefer is not None:
        accepted.sort(key=lambda c: 0 if prefer in (c.engine, c.variant_id) else 1)
    if not accepted:
        reasons = "; ".join(f"{c.variant_id}/{c.engine}: {c.reason}" for c in judged)
        raise SelectionError(
            f"no variant of {manifest.ref} can run on this {profile.device_class} "
            f"device: {reasons or 'the manifest lists no variants'}. Install an engine it "
            "lists or free memory."
        )
    static = " > ".join(order)
    klass = profile.device_class
    ranked = []
    for i, c in enumerate(accepted, start=1):
        why = f"static preference for {klass} is {static}"
        if prefer is not None and prefer in (c.engine, c.variant_id):
            why = f"preferred by configuration ({prefer})"
        ranked.append(replace(c, reason=f"ranked {_ordinal(i)}: {why}"))
    rejected = [c for c in judged if not c.accepted]
    best = ranked[0]
    decided_by = (
        "configuration" if prefer in (best.engine, best.variant_id) else "static preference"
    )
    return Selection(
        manifest.ref, best.variant_id, best.engine, best.device, ranked + rejected, decided_by
    )


Measure = Callable[[Candidate], float]


def benchmark_candidates(
    selection: Selection,
    *,
    hardware_digest: str,
    results_file: Path,
    measure: Measure,
    limit: int = 3,
) -> Selection:
    """Time up to `limit` accepted candidates (tokens/s), keep the fastest; cached in JSON.

    Results are keyed by (model ref, hardware digest), so a device measures a model once.
    A candidate whose measurement raises is skipped; if all fail, the selection stands.
    """
    key = f"{selection.model_ref}|{hardware_digest}"
    cache: dict[str, Any] = {}
    if results_file.is_file():
        cache = json.loads(results_file.read_text(encoding="utf-8"))
    accepted = [c for c in selection.candidates if c.accepted][:limit]
    speeds: dict[str, float] = dict(cache.get(key, {}).get("tokens_per_s", {}))
    if not speeds:
        for c in accepted:
            try:
                speeds[f"{c.variant_id}/{c.engine}"] = float(measure(c))
            except Exception:  # a failing candidate just loses the race
                continue
        cache[key] = {"tokens_per_s": speeds, "measured_at": time.time()}
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(cache, indent=2, sort_keys=True), encoding="utf-8")
    timed = [c for c in accepted if f"{c.variant_id}/{c.engine}" in speeds]
    if not timed:
        return selection
    best = max(timed, key=lambda c: speeds[f"{c.variant_id}/{c.engine}"])
    return replace(
        selection,
        variant_id=best.variant_id,
        engine=best.engine,
        device=best.device,
        decided_by="benchmark",
        tokens_per_s=speeds,
    )


def variant_path(model_dir: Path, variant: Variant) -> Path:
    """What an engine loads: the .gguf or .onnx file, or the OpenVINO IR folder."""
    paths = [model_dir / f.path for f in variant.files if f.path != variant.embedding_file]
    suffix = {"gguf": ".gguf", "onnx": ".onnx"}.get(variant.format)
    if suffix is not None:
        main = [p for p in paths if p.suffix == suffix]
    else:
        main = [p.parent for p in paths if p.name == "openvino_model.xml"]
    if len(main) != 1:
        raise SelectionError(f"variant {variant.id} does not name exactly one model file")
    return main[0]


def embedding_path(model_dir: Path, variant: Variant) -> Path | None:
    """The variant's dedicated embedding GGUF, when its manifest lists one."""
    return model_dir / variant.embedding_file if variant.embedding_file else None


def explain(selection: Selection) -> str:
    """Human-readable account of the choice, for `edgefleet-agent explain`."""
    lines = [
        f"model {selection.model_ref}: {selection.variant_id} on {selection.engine} "
        f"({selection.device}), chosen by {selection.decided_by}",
        "",
    ]
    for c in selection.candidates:
        mark = "ok " if c.accepted else "no "
        speed = selection.tokens_per_s.get(f"{c.variant_id}/{c.engine}")
        rate = f"  [{speed:.1f} tok/s]" if speed is not None else ""
        chosen = (
            " <- chosen"
            if (c.variant_id, c.engine) == (selection.variant_id, selection.engine)
            else ""
        )
        lines.append(
            f"  {mark}{c.variant_id:<16} {c.engine:<12} {c.device:<4} {c.reason}{rate}{chosen}"
        )
    return "\n".join(lines)
