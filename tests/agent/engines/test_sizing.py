"""Slots from memory: the default fits the probe's figure, an explicit --parallel is checked."""

from __future__ import annotations

import pytest

from agent.engines.offload import ModelShape
from agent.engines.sizing import MAX_DEFAULT_PARALLEL, plan_slots
from agent.errors import ModelLoadError

# SmolLM2-135M: 30 layers, 3 KV heads x 64 x (K + V)
SHAPE = ModelShape("llama", n_layers=30, kv_width=384, file_bytes=98 << 20)
PER_SLOT = 30 * 2048 * 384 * 2


def test_the_default_is_as_many_slots_as_half_the_free_memory_holds() -> None:
    plan = plan_slots(SHAPE, slot_context=2048, available_bytes=SHAPE.file_bytes + 6 * PER_SLOT)
    assert (plan.parallel, plan.kv_bytes_per_slot) == (3, PER_SLOT)
    assert "3 slots x 2048 tokens" in plan.reason


def test_the_default_is_capped_and_at_least_one() -> None:
    assert plan_slots(SHAPE, slot_context=2048, available_bytes=64 << 30).parallel == (
        MAX_DEFAULT_PARALLEL
    )
    assert plan_slots(SHAPE, slot_context=2048, available_bytes=1).parallel == 1
    assert plan_slots(SHAPE, slot_context=2048, available_bytes=None).parallel == 1


def test_an_explicit_parallel_that_does_not_fit_says_what_it_needs() -> None:
    with pytest.raises(ModelLoadError, match="--parallel 16 .* needs .* available"):
        plan_slots(SHAPE, slot_context=2048, available_bytes=200 << 20, requested=16)
    assert plan_slots(SHAPE, slot_context=512, available_bytes=None, requested=16).parallel == 16
