"""Desired states: bulk versions, and publishing that never waits for the broker."""

from __future__ import annotations

from sqlmodel import Session

from controlplane.rollouts import desired
from controlplane.rollouts.desired import Confirm, DesiredPublisher
from models.protocol import DesiredModel, DesiredState
from tests.controlplane.rollouts.conftest import add_device

MODEL = DesiredModel(name="tiny", version="2.0", manifest_url="http://cp/m.json")


class SlowBroker:
    """Records publishes; each acknowledgement stays pending until `ack` says otherwise."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.outcome: dict[str, bool | None] = {}

    def publish(self, topic: str, msg: DesiredState) -> Confirm:
        device_id = topic.split("/")[3]
        self.sent.append((device_id, msg.version))
        self.outcome[device_id] = None
        return lambda: self.outcome[device_id]


def test_set_many_starts_at_one_and_bumps(session: Session) -> None:
    for d in ("a", "b"):
        add_device(session, d)
    assert desired.set_many(session, {"a": [MODEL]}) == {"a": 1}
    session.commit()
    assert desired.set_many(session, {"a": [], "b": [MODEL]}) == {"a": 2, "b": 1}
    session.commit()
    row = desired.current(session, "a")
    assert row is not None and row.version == 2 and row.models == []
    assert desired.models_by_device(session, ["a", "b", "c"]) == {
        "a": [],
        "b": [MODEL.model_dump(mode="json")],
    }


def test_publisher_does_not_wait_and_records_acks_later(session: Session) -> None:
    for d in ("a", "b"):
        add_device(session, d)
    desired.set_many(session, {"a": [MODEL], "b": [MODEL]})
    session.commit()
    broker = SlowBroker()
    publisher = DesiredPublisher(broker.publish)
    assert publisher.step(session) == 0  # sent, nothing acknowledged yet
    assert sorted(broker.sent) == [("a", 1), ("b", 1)]
    assert publisher.step(session) == 0
    assert len(broker.sent) == 2  # in flight: not sent again
    broker.outcome["a"] = True
    broker.outcome["b"] = False  # lost: sent again on the next step
    assert publisher.step(session) == 1
    assert sorted(broker.sent) == [("a", 1), ("b", 1), ("b", 1)]
    row = desired.current(session, "a")
    assert row is not None and row.published_version == 1


def test_unacknowledged_publish_is_resent_after_the_timeout(session: Session) -> None:
    add_device(session, "a")
    desired.set_many(session, {"a": [MODEL]})
    session.commit()
    broker = SlowBroker()
    publisher = DesiredPublisher(broker.publish, ack_timeout_s=0)
    publisher.step(session)
    publisher.step(session)
    assert broker.sent == [("a", 1), ("a", 1)]


def test_a_newer_version_goes_out_while_the_older_is_in_flight(session: Session) -> None:
    add_device(session, "a")
    desired.set_many(session, {"a": [MODEL]})
    session.commit()
    broker = SlowBroker()
    publisher = DesiredPublisher(broker.publish)
    publisher.step(session)
    desired.set_many(session, {"a": []})
    session.commit()
    publisher.step(session)
    assert broker.sent == [("a", 1), ("a", 2)]
