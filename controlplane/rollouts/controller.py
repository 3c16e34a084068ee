"""The rollout controller service: elected driver loop, desired publishing, event intake."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.db_models import utcnow
from controlplane.rollouts import driver
from controlplane.rollouts.desired import Confirm, DesiredPublisher, PublishDesired
from controlplane.rollouts.leader import Leadership
from models.protocol import DesiredState, DeviceState, RolloutEvent

_LOGGER = logging.getLogger(__name__)

TICK_S = 1.0
WRITE_BATCH = 500


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
        self._inbox: queue.Queue[tuple[str, BaseModel] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    def step(self) -> bool:
        """One tick (blocking): drive rollouts and publish pending desired states if leading."""
        if not self.leadership.acquire():
            return False
        with Session(self.engine, expire_on_commit=False) as session:
            driver.tick(session, utcnow())
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

    def on_event(self, device_id: str, message: BaseModel) -> None:
        """Bridge handler for `events` (queued; written in batches)."""
        if isinstance(message, RolloutEvent):
            self._inbox.put((device_id, message))
            self._start_writer()

    def on_state(self, device_id: str, message: BaseModel) -> None:
        """Bridge handler for `state`: settles rows whose events went missing."""
        if isinstance(message, DeviceState) and message.online and message.desired_version:
            self._inbox.put((device_id, message))
            self._start_writer()

    def _start_writer(self) -> None:
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name="rollout-events")  # fmt: skip
                self._writer.start()

    def _write_loop(self) -> None:
        # One transaction per batch: thousands of devices report at once during a wave.
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < WRITE_BATCH:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._inbox.put(None)
                    break
                batch.append(item)
            events = [(d, m) for d, m in batch if isinstance(m, RolloutEvent)]
            states = [(d, m.model_dump(mode="json")) for d, m in batch
                      if isinstance(m, DeviceState)]  # fmt: skip
            try:
                with Session(self.engine, expire_on_commit=False) as session:
                    now = utcnow()
                    # Events before states: a state only settles what its events did not.
                    driver.apply_events(session, events, now)
                    driver.reconcile_states(session, states, now)
                    session.commit()
            except Exception:
                _LOGGER.exception("recording %d rollout events failed", len(batch))

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        if self._writer is not None and self._writer.is_alive():
            self._inbox.put(None)
            self._writer.join(timeout=30)


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
        bridge.add_handler("events", controller.on_event)
        bridge.add_handler("state", controller.on_state)
    app.state.rollouts = controller
    task = asyncio.create_task(controller.run(), name="rollouts")
    try:
        yield controller
    finally:
        controller.stop()
        await task
        await asyncio.to_thread(controller.close)
        await asyncio.to_thread(controller.leadership.release)
