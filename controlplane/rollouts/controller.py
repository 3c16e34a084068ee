"""The rollout controller service: elected driver loop, desired publishing, event intake.

Device events and states are stored by `record_device_reports`, which the bridge runs inside
its writer's transaction: an event is in the database before the broker hears it was
received, so a crash at any moment loses none.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.db_models import utcnow
from controlplane.rollouts import driver
from controlplane.rollouts.desired import Confirm, DesiredPublisher, PublishDesired
from controlplane.rollouts.leader import Leadership
from controlplane.telemetry_ingest import Inbound
from models.protocol import DesiredState, DeviceState, RolloutEvent

_LOGGER = logging.getLogger(__name__)

TICK_S = 1.0
# Late joiners (devices enrolled or relabelled into a running rollout) are looked for every
# this many ticks: the anti-join runs over the whole fleet, the rest of a tick does not.
LATE_JOIN_EVERY_TICKS = 10


class RolloutController:
    """Drives rollouts while this replica leads; any replica records device events."""

    def __init__(
        self,
        engine: Engine,
        publish: PublishDesired | None,
        *,
        holder: str | None = None,
        tick_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.publish = publish
        self._publisher = DesiredPublisher(publish) if publish is not None else None
        self.tick_s = TICK_S if tick_s is None else tick_s  # read now, so tests can patch it
        self.leadership = Leadership(
            engine, holder or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        )
        self._stop = asyncio.Event()
        self._ticks = 0

    def step(self) -> bool:
        """One tick (blocking): drive rollouts and publish pending desired states if leading."""
        if not self.leadership.acquire():
            return False
        join_late = self._ticks % LATE_JOIN_EVERY_TICKS == 0
        self._ticks += 1
        with Session(self.engine, expire_on_commit=False) as session:
            driver.tick(session, utcnow(), join_late=join_late)
            if self._publisher is not None:
                self._publisher.step(session)
        return True

    async def run(self) -> None:
        """Tick until stopped; a failing tick is logged and retried."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.step)
            except Exception:
                _LOGGER.exception("rollout tick failed")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.tick_s)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """Ask run() to end after the current tick."""
        self._stop.set()


def record_device_reports(session: Session, items: list[Inbound]) -> None:
    """Bridge recorder for `events` and `state`: fold them into rollout rows (caller commits)."""
    now = utcnow()
    events = [(i.device_id, i.message) for i in items if isinstance(i.message, RolloutEvent)]
    states = [
        (i.device_id, i.message.model_dump(mode="json"))
        for i in items
        if isinstance(i.message, DeviceState) and i.message.online and i.message.desired_version
    ]
    # Events before states: a state only settles what its events did not.
    driver.apply_events(session, events, now)
    driver.reconcile_states(session, states, now)


def bridge_publisher(bridge: Any) -> PublishDesired:
    """Publish desired states through H7's MqttBridge, confirmed by the broker's PUBACK."""

    def publish(topic: str, message: DesiredState) -> Confirm | None:
        if not bridge.connected.is_set():
            return None
        info = bridge.publish(topic, message, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None

        def confirm() -> bool | None:
            # Never waits: the controller asks again on its next tick.
            return True if info.is_published() else None

        return confirm

    return publish


@asynccontextmanager
async def run_rollouts(app: Any) -> AsyncIterator[RolloutController]:
    """Lifespan service: the controller on `app.state.rollouts`, hooked to the bridge if any."""
    bridge = getattr(app.state, "bridge", None)
    controller = RolloutController(
        app.state.engine, bridge_publisher(bridge) if bridge is not None else None
    )
    if bridge is not None:
        bridge.add_recorder(["events", "state"], record_device_reports)
    app.state.rollouts = controller
    task = asyncio.create_task(controller.run(), name="rollouts")
    try:
        yield controller
    finally:
        controller.stop()
        await task
        await asyncio.to_thread(controller.leadership.release)
