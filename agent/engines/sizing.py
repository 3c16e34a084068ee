"""How many sequences a batching engine serves at once, and the context each one gets.

Weights plus `parallel x` the KV cache of one slot's context must fit the memory the probe
found; by default the KV caches take at most `KV_MEMORY_SHARE` of what is left after the
weights, and no more than `MAX_DEFAULT_PARALLEL` slots (more slots than that only slow each
stream on a small device while the model step stays memory-bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.engines.offload import ModelShape
from agent.errors import ModelLoadError

MAX_DEFAULT_PARALLEL = 8
KV_MEMORY_SHARE = 0.5
_MIB = 1 << 20


@dataclass(frozen=True)
class SlotPlan:
    """Slots, the context of each, and the sentence `explain` and /api/ps show."""

    parallel: int
    slot_context: int
    kv_bytes_per_slot: int
    reason: str


def _mib(n: int) -> str:
    return f"{n / _MIB:,.0f} MiB"


def plan_slots(
    shape: ModelShape,
    *,
    slot_context: int,
    available_bytes: int | None,
    requested: int = 0,
) -> SlotPlan:
    """`requested` slots (checked against memory), else as many as fit, 1..MAX_DEFAULT_PARALLEL."""
    per_slot = shape.n_layers * shape.kv_bytes_per_layer(slot_context)
    if requested > 0:
        need = shape.file_bytes + requested * per_slot
        if available_bytes is not None and need > available_bytes:
            raise ModelLoadError(
                f"--parallel {requested} with {slot_context}-token slots needs {_mib(need)} "
                f"(weights {_mib(shape.file_bytes)} + {requested} x KV {_mib(per_slot)}), "
                f"{_mib(available_bytes)} available; lower --parallel or --context-length"
            )
        why = f"{requested} slots x {slot_context} tokens (set), KV {_mib(per_slot)} each"
        return SlotPlan(requested, slot_context, per_slot, why)
    if available_bytes is None:
        parallel = 1
        why = "free memory unknown"
    else:
        room = int((available_bytes - shape.file_bytes) * KV_MEMORY_SHARE)
        parallel = max(1, min(MAX_DEFAULT_PARALLEL, room // max(1, per_slot)))
        why = f"{_mib(available_bytes)} available, weights {_mib(shape.file_bytes)}"
    return SlotPlan(
        parallel,
        slot_context,
        per_slot,
        f"{parallel} slots x {slot_context} tokens, KV {_mib(per_slot)} each ({why})",
    )


def probed_available_memory() -> int | None:
    """Bytes of memory available now, as hwprobe reads it (cgroup limit included)."""
    from hwprobe.memory import read_memory
    from hwprobe.rootfs import RootFS

    return read_memory(RootFS(Path("/")), live=True).available_bytes


def describe_slots(
    gguf: Path, *, context_length: int, requested: int, available_bytes: int | None
) -> str:
    """The slot plan llama.cpp would use for this file, as one sentence for `explain`."""
    from agent.engines.offload import GGUFHeaderError, model_shape

    try:
        plan = plan_slots(
            model_shape(gguf),
            slot_context=context_length,
            available_bytes=available_bytes,
            requested=requested,
        )
    except (GGUFHeaderError, OSError) as exc:
        return f"slots: unknown ({exc})"
    except ModelLoadError as exc:
        return f"slots: {exc}"
    return f"slots: {plan.reason}"
