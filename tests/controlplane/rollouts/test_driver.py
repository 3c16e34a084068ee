"""The rollout driver on a real (SQLite) database, with the broker replaced by a list."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.rollouts import desired, driver, service
from controlplane.rollouts.models import RolloutCreate, RolloutDevice
from controlplane.rollouts.strategy import Selector, Strategy, Wave
from models.protocol import DesiredState, RolloutEvent
from tests.controlplane.rollouts.conftest import ARTIFACTS, add_device, add_model


class Broker:
    """Retained desired messages by topic, like the broker keeps them."""

    def __init__(self) -> None:
        self.retained: dict[str, DesiredState] = {}
        self.up = True

    def publish(self, topic: str, msg: DesiredState) -> Callable[[], bool] | None:
        if not self.up:
            return None
        self.retained[topic] = msg
        return lambda: True

    def desired(self, device_id: str) -> DesiredState:
        return self.retained[f"ef/v1/devices/{device_id}/desired"]


def now_plus(seconds: float = 0) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def make(session: Session, waves: list[str], **strategy: object) -> str:
    spec = RolloutCreate(
        model="tiny:2.0",
        selector=Selector(labels={"site": "a"}),
        strategy=Strategy(waves=[Wave.parse(w) for w in waves], **strategy),
    )
    return service.create_rollout(session, spec=spec, artifacts_url=ARTIFACTS, created_by="t").id


def step(session: Session, broker: Broker, seconds: float = 0) -> None:
    driver.tick(session, now_plus(seconds))
    desired.DesiredPublisher(broker.publish).step(session)


def report(session: Session, broker: Broker, device_id: str, kind: str, detail: str = "") -> bool:
    msg = broker.desired(device_id)
    event = RolloutEvent(
        desired_version=msg.version,
        rollout_id=msg.models[0].rollout_id if msg.models else None,
        model="tiny:2.0",
        kind=kind,
        detail=detail,
    )
    return apply(session, device_id, event)


def apply(session: Session, device_id: str, event: RolloutEvent) -> bool:
    (applied,) = driver.apply_events(session, [(device_id, event)], now_plus())
    session.commit()
    return applied


def states(session: Session, rollout_id: str) -> dict[str, str]:
    return {r.device_id: r.state for r in service.devices_of(session, rollout_id)}


def fleet(session: Session, n: int, active: str | None = "tiny:1.0") -> list[str]:
    add_model(session, version="1.0")
    add_model(session, version="2.0")
    ids = [f"dev-{i}" for i in range(n)]
    for d in ids:
        add_device(session, d, labels={"site": "a"}, active=active)
    add_device(session, "other-site", labels={"site": "b"})
    return ids


def test_waves_advance_on_success_and_complete(session: Session) -> None:
    ids = fleet(session, 4)
    rid = make(session, ["1", "50%"])
    broker = Broker()
    step(session, broker)
    canary = [d for d, s in states(session, rid).items() if s == "in_progress"]
    assert len(canary) == 1 and len(broker.retained) == 1
    msg = broker.desired(canary[0])
    assert msg.version == 1 and msg.models[0].version == "2.0"
    assert msg.models[0].manifest_url == f"{ARTIFACTS}/tiny/2.0/manifest.json"
    assert report(session, broker, canary[0], "downloading")
    step(session, broker)
    assert len(broker.retained) == 1  # the canary is not done yet
    assert report(session, broker, canary[0], "active")
    step(session, broker)  # advance
    step(session, broker)  # dispatch wave 1
    assert len(broker.retained) == 2
    for d in ids:
        if f"ef/v1/devices/{d}/desired" in broker.retained and d != canary[0]:
            report(session, broker, d, "active")
    step(session, broker)
    step(session, broker)
    for d in ids:
        if states(session, rid)[d] == "in_progress":
            report(session, broker, d, "active")
    step(session, broker)
    public = service.to_public(session, service.get_rollout(session, rid))
    assert public.status == "succeeded"
    assert [w.devices for w in public.waves] == [1, 1, 2]
    assert "other-site" not in states(session, rid)


def test_failed_canary_aborts_and_reverts_to_previous_model(session: Session) -> None:
    fleet(session, 5)
    rid = make(session, ["1", "100%"], failure_threshold=0.1)
    broker = Broker()
    step(session, broker)
    (canary,) = [d for d, s in states(session, rid).items() if s == "in_progress"]
    assert report(session, broker, canary, "rolled_back", "health check failed: 0.1 tokens/s")
    step(session, broker)
    rollout = service.get_rollout(session, rid)
    assert rollout.status == "aborted"
    got = states(session, rid)
    assert got[canary] == "rolled_back"
    assert sorted(set(got.values())) == ["canceled", "rolled_back"]
    back = broker.desired(canary)
    assert back.version == 2 and [m.version for m in back.models] == ["1.0"]
    assert back.models[0].manifest_url == f"{ARTIFACTS}/tiny/1.0/manifest.json"
    assert len(broker.retained) == 1  # nobody else ever got 2.0


def test_late_joiner_and_offline_broker_catch_up(session: Session) -> None:
    fleet(session, 1)
    rid = make(session, ["100%"])
    broker = Broker()
    broker.up = False
    step(session, broker)
    assert broker.retained == {}  # stored, not yet published
    add_device(session, "late", labels={"site": "a"})
    broker.up = True
    step(session, broker)
    assert set(broker.retained) == {"ef/v1/devices/dev-0/desired", "ef/v1/devices/late/desired"}
    assert states(session, rid) == {"dev-0": "in_progress", "late": "in_progress"}


def test_a_device_enrolled_between_late_join_passes_joins_before_the_rollout_finishes(
    session: Session,
) -> None:
    fleet(session, 1)
    rid = make(session, ["100%"])
    broker = Broker()
    step(session, broker)
    assert report(session, broker, "dev-0", "active")
    add_device(session, "late", labels={"site": "a"})
    driver.tick(session, now_plus(), join_late=False)  # the controller joins late every 10th tick
    assert service.get_rollout(session, rid).status == "running"
    assert states(session, rid) == {"dev-0": "succeeded", "late": "queued"}
    step(session, broker)
    assert report(session, broker, "late", "active")
    driver.tick(session, now_plus(), join_late=False)
    assert service.get_rollout(session, rid).status == "succeeded"


def test_device_timeout_and_stale_events(session: Session) -> None:
    fleet(session, 1)
    rid = make(session, ["100%"], device_timeout_s=60, failure_threshold=1.0, success_threshold=0.0)
    broker = Broker()
    step(session, broker)
    stale = RolloutEvent(desired_version=0, rollout_id=rid, model="tiny:2.0", kind="active")
    assert not apply(session, "dev-0", stale)
    step(session, broker, seconds=120)
    assert states(session, rid) == {"dev-0": "timed_out"}
    assert not report(session, broker, "dev-0", "downloading")  # after a terminal state
    assert service.get_rollout(session, rid).status == "succeeded"


def test_missed_events_are_settled_from_state(session: Session) -> None:
    fleet(session, 1)
    rid = make(session, ["100%"])
    broker = Broker()
    step(session, broker)
    row = session.get(RolloutDevice, (rid, "dev-0"))
    assert row is not None and row.desired_version == 1
    state = {"desired_version": 1, "active": {"name": "tiny", "version": "2.0"}}
    driver.reconcile_states(session, [("dev-0", state)], now_plus(30))
    session.commit()
    assert states(session, rid) == {"dev-0": "succeeded"}


def test_approval_pause_resume_and_rollback(session: Session) -> None:
    fleet(session, 3)
    rid = make(session, ["1", "100%"], require_approval=True)
    broker = Broker()
    step(session, broker)
    (canary,) = [d for d, s in states(session, rid).items() if s == "in_progress"]
    report(session, broker, canary, "active")
    step(session, broker)
    assert service.get_rollout(session, rid).status == "waiting_approval"
    step(session, broker)
    assert len(broker.retained) == 1
    service.act(session, rid, "resume")
    step(session, broker)
    assert len(broker.retained) == 3
    service.act(session, rid, "pause")
    assert service.get_rollout(session, rid).status == "paused"
    rolled = service.act(session, rid, "rollback", "bad answers")
    assert rolled.status == "rolled_back" and rolled.reason == "bad answers"
    step(session, broker)
    assert all(broker.desired(d).models[0].version == "1.0" for d in states(session, rid))


def test_state_survives_a_restart(engine: Engine, db_url: str) -> None:
    from controlplane.core.db import make_engine

    with Session(engine) as s:
        fleet(s, 2)
        rid = make(s, ["100%"])
        step(s, Broker())
    other = make_engine(db_url)
    with Session(other) as s:
        assert set(states(s, rid).values()) == {"in_progress"}
        assert desired.current(s, "dev-0") is not None
    other.dispose()


def test_the_selector_query_requires_every_condition(session: Session) -> None:
    add_model(session, version="2.0")
    add_device(session, "d1", labels={"site": "a", "x": "y"}, device_class="jetson")
    add_device(session, "d2", labels={"site": "b"}, device_class="jetson")
    add_device(session, "d3", labels={"site": "a"}, device_class="cpu-x86")
    add_device(session, "d4", labels={"site": "a", "x": "z"}, device_class="jetson")

    def matched(selector: Selector) -> list[str]:
        spec = RolloutCreate(model="tiny:2.0", selector=selector, strategy=Strategy())
        rollout = service.create_rollout(
            session, spec=spec, artifacts_url=ARTIFACTS, created_by="t"
        )
        return driver.matching_devices(session, rollout)

    assert matched(Selector(labels={"site": "a"}, device_classes=["jetson"])) == ["d1", "d4"]
    assert matched(Selector(labels={"site": "a", "x": "y"})) == ["d1"]
    assert matched(Selector(device_classes=["cpu-x86"])) == ["d3"]
    assert matched(Selector()) == ["d1", "d2", "d3", "d4"]
    assert matched(Selector(device_ids=["d2", "d3"], labels={"site": "b"})) == ["d2"]
    assert matched(Selector(device_ids=["nobody"])) == []


def test_a_device_times_out_only_after_its_timeout(session: Session) -> None:
    fleet(session, 1)
    rid = make(session, ["100%"], device_timeout_s=10, failure_threshold=1.0, success_threshold=0.0)
    broker = Broker()
    step(session, broker)
    assert states(session, rid) == {"dev-0": "in_progress"}
    step(session, broker, seconds=5)
    assert states(session, rid) == {"dev-0": "in_progress"}
    step(session, broker, seconds=11)
    assert states(session, rid) == {"dev-0": "timed_out"}
