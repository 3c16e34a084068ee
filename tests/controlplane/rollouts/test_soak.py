"""Soak after activation: the pure rules, and the driver on a real database."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from controlplane.rollouts import service
from controlplane.rollouts.health import HealthBounds, HealthWindow, p95, regression
from controlplane.telemetry_models import TelemetrySample
from models.protocol import ProbePrompt
from tests.controlplane.rollouts.test_driver import Broker, fleet, make, now_plus, report, step

BOUNDS = HealthBounds(min_samples=3)


def window(
    tps: float | None, ttft: float | None = 80.0, requests: int = 4, errors: int = 0, n: int = 5
) -> HealthWindow:
    return HealthWindow.of([(tps, ttft, requests, errors)] * n)


def test_p95_is_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


def test_healthy_switch_is_no_regression() -> None:
    assert regression(window(40.0), window(36.0), BOUNDS) is None  # 10 % slower is allowed


def test_slow_model_regresses_on_tokens_per_s() -> None:
    why = regression(window(40.0), window(20.0), BOUNDS)
    assert why is not None and "tok/s" in why


def test_slow_first_token_regresses_on_ttft_p95() -> None:
    why = regression(window(40.0, ttft=80.0), window(40.0, ttft=200.0), BOUNDS)
    assert why is not None and "TTFT p95" in why


def test_errors_regress_even_without_a_baseline() -> None:
    why = regression(HealthWindow(), window(None, None, requests=4, errors=2), BOUNDS)
    assert why is not None and "failed" in why


def test_too_few_samples_judge_nothing() -> None:
    assert regression(window(40.0), window(5.0, n=2), BOUNDS) is None
    assert regression(window(None, None), window(5.0), BOUNDS) is None  # idle before: no base


def add_samples(
    session: Session, device_id: str, seconds: float, tps: float, errors: int = 0, n: int = 5
) -> None:
    """`n` samples at `seconds` from now (negative: before), one second apart."""
    for i in range(n):
        session.add(
            TelemetrySample(
                device_id=device_id,
                ts=now_plus(seconds + i),
                seq=abs(int(seconds * 1000)) + i,
                idx=0,
                tokens_per_s=tps,
                ttft_ms=80.0,
                requests=4,
                errors=errors,
            )
        )
    session.commit()


def switched_canary(
    session: Session, devices: int, soak_s: float
) -> tuple[list[str], str, Broker, str]:
    """A fleet at 40 tok/s, a rollout of a canary wave then the rest, and its canary just
    switched to the new model: (device ids, rollout id, broker, canary)."""
    ids = fleet(session, devices)
    for d in ids:
        add_samples(session, d, -60, tps=40.0)
    rid = make(session, ["1", "100%"], soak_s=soak_s)
    broker = Broker()
    step(session, broker)
    (canary,) = [r.device_id for r in service.devices_of(session, rid) if r.state == "in_progress"]
    assert report(session, broker, canary, "active")
    return ids, rid, broker, canary


def test_regressed_canary_fails_its_soak_and_is_reverted(session: Session) -> None:
    _ids, rid, broker, canary = switched_canary(session, 4, soak_s=600.0)
    row = next(r for r in service.devices_of(session, rid) if r.device_id == canary)
    assert (row.state, row.sub_status) == ("in_progress", "soaking")
    step(session, broker, seconds=1)  # no telemetry since the switch yet: keeps soaking
    assert len(broker.retained) == 1
    add_samples(session, canary, 1, tps=12.0)  # the new model runs at a third of the speed
    step(session, broker, seconds=10)
    row = next(r for r in service.devices_of(session, rid) if r.device_id == canary)
    assert (row.state, row.sub_status) == ("failed", "soak_failed")
    assert "tok/s" in row.detail
    back = broker.desired(canary)
    assert [m.version for m in back.models] == ["1.0"] and back.models[0].rollout_id == rid
    assert service.get_rollout(session, rid).status == "aborted"
    assert len(broker.retained) == 1  # the second wave never started


def test_wave_advances_only_after_its_soak(session: Session) -> None:
    ids, rid, broker, canary = switched_canary(session, 2, soak_s=30.0)
    add_samples(session, canary, 1, tps=39.0)
    step(session, broker, seconds=10)
    step(session, broker, seconds=10)
    assert len(broker.retained) == 1  # still soaking: wave 1 waits
    step(session, broker, seconds=31)  # soak over: the canary passes
    step(session, broker, seconds=31)  # wave 1 dispatched
    rows = {r.device_id: r for r in service.devices_of(session, rid)}
    assert rows[canary].state == "succeeded" and "soaked" in rows[canary].detail
    assert len(broker.retained) == 2
    other = next(d for d in ids if d != canary)
    assert rows[other].state == "in_progress"
    activated = rows[canary].activated_at
    assert activated is not None and rows[other].dispatched_at is not None
    assert rows[other].dispatched_at.replace(tzinfo=None) >= (
        activated.replace(tzinfo=None) + timedelta(seconds=30)
    )
    public = service.device_to_public(rows[canary])  # the API shows when its soak began
    assert public.activated_at is not None
    assert public.activated_at.replace(tzinfo=None) == activated.replace(tzinfo=None)


def test_quality_probe_travels_with_the_desired_model(session: Session) -> None:
    (device,) = fleet(session, 1)
    make(session, ["100%"], quality_probe=[ProbePrompt(prompt="2+2=", expect="4")])
    broker = Broker()
    step(session, broker)
    (model,) = broker.desired(device).models
    assert [(p.prompt, p.expect) for p in model.probe] == [("2+2=", "4")]
