"""The control plane's one MQTT connection: consume device topics, persist, publish.

Device topics come in through MQTT v5 shared subscriptions (`$share/<group>/...`) so replicas
split them; the group name is derived from the control plane's secret, because Mosquitto 2.0
lets any client join a group it can name (broker_sync.share_group). Every payload is
validated against models.protocol; a bad one is counted and dropped, and no exception
reaches paho's loop. Other components store what they read (rollout events, command results)
through recorders that run inside the writer's transaction; messages are acknowledged to the
broker only after their batch is committed (manual acks), so a crash loses nothing that the
broker has not already been told is safe; the writes are idempotent, so redeliveries are
harmless.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine

from controlplane.broker_sync import (
    control_plane_client_id,
    control_plane_mqtt_password,
    share_group,
)
from controlplane.errors import BridgeError
from controlplane.ingest_counters import BridgeStats
from controlplane.mqtt_receive import LeanReceiveClient
from controlplane.telemetry_ingest import Inbound, IngestWriter, Recorder, WriterStatus
from models import protocol
from models.budget import DEVICE_BUDGET, Budget, Limiter

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
KEEPALIVE_S = 30
SESSION_EXPIRY_S = 300  # the broker queues QoS 1 messages this long while we are away
RECEIVE_MAXIMUM = 2000  # unacknowledged messages in flight to us; the broker queues the rest
DEVICE_ID_MAX_CHARS = 64  # the device.id column
DROP_LOG_INTERVAL_S = 60.0  # one warning per device and reason this often about its drops
DROP_LOG_MAX_KEYS = 100_000  # (device, reason) pairs remembered for that
GIL_SWITCH_INTERVAL_S = 0.001  # see run_bridge
PUBLISH_IN_FLIGHT = 1000  # our QoS 1 publishes awaiting PUBACK (paho's default, 20, throttles
# a wave of desired states to one broker round trip per 20 messages)

LEGACY_SHARE_GROUP = protocol.SHARE_GROUP  # guessable; left on connect if a session still has it

INBOUND_SCHEMAS: dict[str, type[BaseModel]] = {
    "state": protocol.DeviceState,
    "telemetry": protocol.Telemetry,
    "events": protocol.RolloutEvent,
    "cmd/result": protocol.CommandResult,
}


def leaf_of(topic: str) -> str | None:
    """`cmd/result` for `ef/v1/devices/{id}/cmd/result`; None for other topics."""
    if protocol.device_id_from_topic(topic) is None:
        return None
    return "/".join(topic.split("/")[4:]) or None


class MqttBridge:
    """Owns the control plane's MQTT client, its reconnects and the database writer."""

    def __init__(
        self,
        engine: Engine,
        *,
        host: str,
        port: int,
        username: str,
        password: str | None,
        keep_raw: timedelta,
        group: str,
        client_id: str = "",
        tls: bool = False,
        ca_file: Path | None = None,
        device_budget: Budget = DEVICE_BUDGET,
    ) -> None:
        self.host, self.port, self.group = host, port, group
        self.client_id = client_id or f"edgefleet-cp-{secrets.token_hex(8)}"
        self._stats = BridgeStats()
        self._budget = Limiter(device_budget)  # paho's thread only
        # (device id, counter) -> when its last warning went out
        self._drop_logged: dict[tuple[str, str], float] = {}
        self._connect_handlers: list[Callable[[], None]] = []
        self._generation = 0
        self._stopping = False
        self.connected = threading.Event()
        self._writer = IngestWriter(engine, stats=self._stats, keep_raw=keep_raw)
        client = LeanReceiveClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            sink=self._on_publish_packet,
        )
        client.username_pw_set(username, password)
        if tls:
            try:
                client.tls_set_context(ssl.create_default_context(cafile=ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise BridgeError(f"cannot use CA file {ca_file} for the broker: {exc}") from exc
        client.max_inflight_messages_set(PUBLISH_IN_FLIGHT)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message  # QoS 2 only; the rest goes to the sink
        self._client = client

    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, invalid, rejected, persisted, handler_errors, reconnects, ..."""
        return self._stats.snapshot()

    def writer_status(self) -> WriterStatus:
        """How far behind the database writer is (for /health)."""
        return self._writer.status()

    def add_recorder(self, leaves: Collection[str], recorder: Recorder) -> None:
        """Store every message on `leaves` with `recorder`, inside the batch's transaction."""
        unknown = sorted(set(leaves) - set(INBOUND_SCHEMAS))
        if unknown:
            raise ValueError(
                f"no device topic {unknown[0]!r}; use one of {', '.join(INBOUND_SCHEMAS)}"
            )
        self._writer.add_recorder(frozenset(leaves), recorder)

    def add_connect_handler(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every (re)connect, e.g. to republish what may be missing."""
        self._connect_handlers.append(callback)

    def start(self) -> None:
        """Start the writer and connect in the background (retrying until the broker answers)."""
        self._writer.start()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect_async(
            self.host, self.port, keepalive=KEEPALIVE_S, clean_start=False, properties=props
        )
        self._client.loop_start()
        _LOGGER.info("MQTT bridge connecting to %s:%s as %s", self.host, self.port, self.client_id)

    def stop(self) -> None:
        """Write and acknowledge what is queued, then disconnect."""
        self._stopping = True
        self._writer.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and subscribed (for startup checks and tests)."""
        return self.connected.wait(timeout)

    def publish(
        self, topic: str, model: BaseModel, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish `model` as JSON; QoS 1 messages are queued by paho while disconnected."""
        return self.publish_raw(topic, model.model_dump_json(), qos=qos, retain=retain)

    def publish_raw(
        self, topic: str, payload: str, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish a payload already serialised (the API process's requests)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            _LOGGER.warning("broker not connected; %s is queued until it is", topic)
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BridgeError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        return info

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            _LOGGER.error(
                "broker refused the control plane (%s); check mqtt_cp_username/password", reason
            )
            return
        self._generation += 1
        if self._generation > 1:
            self._stats.incr("reconnects")
        client.subscribe(
            [(protocol.shared_subscription(leaf, self.group), 1) for leaf in INBOUND_SCHEMAS]
        )
        if self.group != LEGACY_SHARE_GROUP:  # a session from before the group was secret
            client.unsubscribe(
                [protocol.shared_subscription(leaf, LEGACY_SHARE_GROUP) for leaf in INBOUND_SCHEMAS]
            )
        self.connected.set()
        _LOGGER.info("MQTT bridge connected to %s:%s", self.host, self.port)
        for callback in self._connect_handlers:
            try:
                callback()
            except Exception:
                _LOGGER.exception("connect handler %s failed", callback)

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        if self._stopping:
            return
        _LOGGER.warning("MQTT bridge disconnected (%s); paho reconnects with backoff", reason)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        # QoS 2 only, which our QoS 1 subscriptions never deliver; handled the same way.
        try:
            topic = msg.topic.encode()
        except UnicodeDecodeError:
            topic = b"\xff"  # not a device topic: counted as invalid and acknowledged
        self._on_publish_packet(topic, bytes(msg.payload), msg.mid, msg.qos)

    def _on_publish_packet(self, topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        # Nothing may escape into paho's thread: one bad message must not stop the bridge.
        self._stats.incr("received")
        try:
            self._handle_message(topic.decode(), payload, mid, qos)
        except UnicodeDecodeError:
            self._drop(repr(topic[:200]), mid, qos, "the topic is not UTF-8")
        except Exception:
            _LOGGER.exception("failed on a message on %r", topic[:200])
            self._stats.incr("handler_errors")
            self._ack(mid, qos, self._generation)

    def _handle_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        generation = self._generation
        device_id = protocol.device_id_from_topic(topic)
        leaf = leaf_of(topic)
        schema = INBOUND_SCHEMAS.get(leaf or "")
        if device_id is None or leaf is None or schema is None:
            self._drop(topic, mid, qos, "not a device topic the control plane reads")
            return
        if len(device_id) > DEVICE_ID_MAX_CHARS or "\x00" in device_id:
            self._drop(topic, mid, qos, "not a device id")
            return
        if self._budget.spend(device_id, len(payload)) > 0:  # before parsing: a flood costs little
            why = "the device sends more than its budget (models/budget.py); dropped unread"
            self._drop(topic, mid, qos, why, device_id=device_id, counter="throttled")
            return
        try:
            message = schema.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "payload"
            why = f"{exc.error_count()} error(s), first {where}: {first['msg']}"
            self._drop(topic, mid, qos, why, device_id=device_id)
            return
        self._writer.submit(
            Inbound(
                leaf=leaf,
                device_id=device_id,
                message=message,
                received_at=protocol.utcnow(),
                ack=lambda: self._ack(mid, qos, generation),
            )
        )

    def _drop(
        self,
        topic: str,
        mid: int,
        qos: int,
        why: str,
        *,
        device_id: str = "",
        counter: str = "invalid",
    ) -> None:
        """Count the message under `counter` against its device, warn, acknowledge it."""
        self._stats.incr(counter, device_id=device_id)
        # One warning per device and reason a minute: a flood must not flood the log too.
        now, last = time.monotonic(), self._drop_logged.get((device_id, counter))
        if last is None or now - last >= DROP_LOG_INTERVAL_S:
            if len(self._drop_logged) >= DROP_LOG_MAX_KEYS:
                self._drop_logged.clear()
            self._drop_logged[(device_id, counter)] = now
            _LOGGER.warning(
                "dropped %s message on %s: %s (more from this device are "
                "counted, logged at debug level for a minute)",
                counter,
                topic[:200],
                why,
            )
        else:
            _LOGGER.debug("dropped %s message on %s: %s", counter, topic[:200], why)
        self._ack(mid, qos, self._generation)

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        # A packet id from an earlier connection may now name another message.
        if qos > 0 and generation == self._generation:
            self._client.ack(mid, qos)


@asynccontextmanager
async def run_bridge(app: Any) -> AsyncIterator[MqttBridge | None]:
    """Lifespan service: the bridge on `app.state.bridge` while MQTT is enabled, else None."""
    settings = app.state.settings
    app.state.bridge = None
    if not settings.mqtt_enabled:
        yield None
        return
    host, port, tls = settings.bridge_address
    bridge = MqttBridge(
        app.state.engine,
        host=host,
        port=port,
        username=settings.mqtt_cp_username,
        password=control_plane_mqtt_password(settings),
        keep_raw=settings.telemetry_raw_retention,
        group=share_group(settings),
        client_id=control_plane_client_id(settings),
        tls=tls,
        ca_file=settings.mqtt_ca_cert_file if settings.mqtt_ca_cert_file.is_file() else None,
        device_budget=DEVICE_BUDGET.scaled(settings.device_budget_scale),
    )
    # The bridge's threads run CPU-bound (parsing, writing); a request thread waiting for the
    # GIL gets it after the switch interval, once per hop: 5 ms by default, 1 ms here.
    # Measured with bench/fleet_scale.py --devices 2000: API p99 244 -> 153 ms, same CPU.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, GIL_SWITCH_INTERVAL_S))
    bridge.start()
    app.state.bridge = bridge
    try:
        yield bridge
    finally:
        app.state.bridge = None
        await asyncio.to_thread(bridge.stop)
        sys.setswitchinterval(switch_interval)
