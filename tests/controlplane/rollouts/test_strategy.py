"""The pure wave/threshold rules, without database or broker."""

from __future__ import annotations

import pytest

from controlplane.rollouts.strategy import (
    DeviceRolloutState as S,
)
from controlplane.rollouts.strategy import (
    Strategy,
    Wave,
    WaveCounts,
    assign_waves,
    decide,
    event_applies,
    state_for_event,
    wave_targets,
)


def waves(*texts: str) -> list[Wave]:
    return [Wave.parse(t) for t in texts]


def test_percent_waves_are_cumulative_and_end_at_everyone() -> None:
    assert wave_targets(1000, waves("1%", "10%", "50%", "100%")) == [10, 100, 500, 1000]
    assert wave_targets(3, waves("1%", "10%", "50%", "100%")) == [1, 1, 2, 3]
    assert wave_targets(0, waves("1%", "100%")) == [0, 0]


def test_count_waves_and_canary_count() -> None:
    assert wave_targets(50, waves("5", "100%")) == [5, 50]
    assert wave_targets(3, waves("5", "100%")) == [3, 3]


def test_strategy_appends_a_final_full_wave() -> None:
    strategy = Strategy(waves=waves("2", "10%"))
    assert [str(w) for w in strategy.waves] == ["2", "10%", "100%"]


def test_wave_parse_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Wave.parse("ten percent")
    with pytest.raises(ValueError):
        Wave(percent=10, count=3)


def test_assign_waves_covers_everyone_once_and_is_stable() -> None:
    ids = [f"dev-{i}" for i in range(200)]
    first = assign_waves("r1", ids, waves("1%", "10%", "50%", "100%"))
    assert sorted(first) == sorted(ids)
    sizes = [sum(1 for w in first.values() if w == i) for i in range(4)]
    assert sizes == [2, 18, 80, 100]
    assert assign_waves("r1", reversed(ids), waves("1%", "10%", "50%", "100%")) == first
    canaries_r2 = {d for d, w in assign_waves("r2", ids, waves("1%", "100%")).items() if w == 0}
    canaries_r1 = {d for d, w in first.items() if w == 0}
    assert canaries_r1 != canaries_r2


def counts(*states: S) -> WaveCounts:
    return WaveCounts.of(states)


def test_decide_waits_while_a_wave_is_pending() -> None:
    strategy = Strategy(waves=waves("1", "100%"))
    wave0 = counts(S.IN_PROGRESS)
    assert decide(strategy, 0, [wave0, counts(S.QUEUED)], wave0) == "wait"


def test_decide_advances_pauses_for_approval_and_completes() -> None:
    strategy = Strategy(waves=waves("1", "100%"))
    ok = counts(S.SUCCEEDED)
    assert decide(strategy, 0, [ok, counts(S.QUEUED)], ok) == "advance"
    gated = Strategy(waves=waves("1", "100%"), require_approval=True)
    assert decide(gated, 0, [ok, counts(S.QUEUED)], ok) == "await_approval"
    assert decide(strategy, 1, [ok, ok], counts(S.SUCCEEDED, S.SUCCEEDED)) == "complete"


def test_decide_aborts_past_the_failure_threshold() -> None:
    strategy = Strategy(waves=waves("2", "100%"), failure_threshold=0.4)
    wave0 = counts(S.ROLLED_BACK, S.IN_PROGRESS)
    assert decide(strategy, 0, [wave0, counts(S.QUEUED)], wave0) == "abort"
    tolerant = Strategy(waves=waves("3", "100%"), failure_threshold=0.5, success_threshold=0.6)
    wave0 = counts(S.TIMED_OUT, S.SUCCEEDED, S.SUCCEEDED)
    assert decide(tolerant, 0, [wave0, counts()], wave0) == "advance"


def test_decide_pauses_when_a_wave_misses_the_success_threshold() -> None:
    strategy = Strategy(waves=waves("4", "100%"), failure_threshold=0.5, success_threshold=0.9)
    wave0 = counts(S.FAILED, S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED)
    assert decide(strategy, 0, [wave0, counts(S.QUEUED)], wave0) == "pause"


def test_canceled_devices_do_not_count() -> None:
    assert counts(S.CANCELED, S.SUCCEEDED) == WaveCounts(total=1, succeeded=1)


def test_events_map_to_device_states() -> None:
    assert state_for_event("downloading") == (S.IN_PROGRESS, "downloading")
    assert state_for_event("active")[0] is S.SUCCEEDED
    assert state_for_event("failed")[0] is S.FAILED
    assert state_for_event("rolled_back")[0] is S.ROLLED_BACK
    assert event_applies(S.IN_PROGRESS, "loading")
    assert not event_applies(S.TIMED_OUT, "downloading")
    assert event_applies(S.SUCCEEDED, "rolled_back")
