"""Token buckets: a burst, then a steady rate, per sender, bounded in memory."""

from __future__ import annotations

import pytest

from models.budget import AGENT_PACE, DEVICE_BUDGET, Allowance, Budget, Limiter

BUDGET = Budget(burst_messages=3, messages_per_s=1.0, burst_bytes=1000, bytes_per_s=100.0)


def test_a_burst_then_the_steady_rate() -> None:
    now = [0.0]
    limiter = Limiter(BUDGET, clock=lambda: now[0])
    assert [limiter.spend("a", 10) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.spend("a", 10) == pytest.approx(1.0)
    assert limiter.spend("b", 10) == 0.0  # another sender has its own allowance
    now[0] = 1.0
    assert limiter.spend("a", 10) == 0.0


def test_bytes_are_budgeted_as_well_as_messages() -> None:
    allowance = Allowance(BUDGET, 0.0)
    assert allowance.spend(900, 0.0) == 0.0
    assert allowance.spend(300, 0.0) == pytest.approx(2.0)  # 100 bytes left, 100 a second
    assert allowance.spend(300, 2.0) == 0.0
    assert allowance.spend(5000, 1000.0) == pytest.approx(40.0)  # larger than the burst: never


def test_a_refused_message_spends_nothing() -> None:
    allowance = Allowance(BUDGET, 0.0)
    assert allowance.spend(2000, 0.0) > 0
    assert [allowance.spend(300, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_zero_rate_limits_nothing() -> None:
    limiter = Limiter(BUDGET.scaled(0))
    assert all(limiter.spend("a", 10**9) == 0.0 for _ in range(100))


def test_allowances_stay_bounded() -> None:
    limiter = Limiter(BUDGET, max_senders=10, clock=lambda: 0.0)
    for i in range(100):
        limiter.spend(f"10.0.0.{i}")
    assert len(limiter._allowances) <= 10


def test_idle_senders_are_forgotten_before_busy_ones() -> None:
    now = [0.0]
    limiter = Limiter(BUDGET, max_senders=3, clock=lambda: now[0])
    limiter.spend("idle-1")
    limiter.spend("busy", 1000)
    limiter.spend("idle-2")
    now[0] = 5.0  # the idle ones are full again; "busy" is still refilling its bytes
    limiter.spend("new")
    assert set(limiter._allowances) == {"busy", "new"}
    assert limiter.spend("busy", 1000) > 0  # its spent budget was not reset


def test_the_agent_paces_inside_what_the_control_plane_accepts() -> None:
    assert AGENT_PACE.burst_messages < DEVICE_BUDGET.burst_messages
    assert AGENT_PACE.messages_per_s < DEVICE_BUDGET.messages_per_s
    assert AGENT_PACE.burst_bytes < DEVICE_BUDGET.burst_bytes
    assert AGENT_PACE.bytes_per_s < DEVICE_BUDGET.bytes_per_s
    # the largest message an agent may send fits its own burst
    from agent.fleet.outbox import MAX_PAYLOAD_BYTES

    assert MAX_PAYLOAD_BYTES <= AGENT_PACE.burst_bytes
