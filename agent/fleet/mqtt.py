"""The agent's one MQTT connection: retained state with a Last Will, desired/cmd subscriptions,
reconnect with backoff, TLS against the fleet's CA, and an outbox drained in order whenever
the broker is reachable (and left alone, without spinning, while it is not)."""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ValidationError

from agent.errors import AgentError
from agent.fleet.outbox import MAX_PAYLOAD_BYTES, Outbox, OutboxEntry
from models.budget import AGENT_PACE, Allowance
from models.protocol import Command, CommandResult, DesiredState, DeviceState, device_topic

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN_S = 1.0  # the first retry waits about this long...
RECONNECT_MAX_S = 30.0  # ...each failure doubles it up to this, with jitter (see backoff_s)
ACK_TIMEOUT_S = 10.0
DRAIN_BATCH = 200
KEEPALIVE_S = 30
IDLE_WAKE_S = 1.0  # while connected the drainer looks at the outbox at least this often;
# while disconnected it sleeps until the broker is back (no polling, whatever this says)
RESEND_PAUSE_S = 1.0  # after a batch the broker did not acknowledge in full
MQTT_PORT = 1883
MQTTS_PORT = 8883


class MqttError(AgentError):
    """The MQTT connection could not be set up."""


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is and who this device is to it."""

    host: str
    port: int
    device_id: str
    username: str
    password: str
    tls: bool = False
    ca_file: str | None = None
    ca_pem: str | None = None  # trusted instead of the system's CAs (from enrollment)
    client_cert_file: str | None = None  # presented to the broker with its key (from enrollment)
    client_key_file: str | None = None


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of `mqtt://host[:1883]` or `mqtts://host[:8883]`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MqttError(f"broker URL {url!r} is malformed: {exc}") from exc
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise MqttError(f"broker URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (MQTTS_PORT if tls else MQTT_PORT), tls


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file, cadata=settings.ca_pem)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise MqttError(
            f"cannot use the broker's CA certificate ({exc}); enroll again or fix ca_file"
        ) from exc
    if settings.client_cert_file and settings.client_key_file:
        try:
            context.load_cert_chain(settings.client_cert_file, settings.client_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(
                f"cannot use the client certificate {settings.client_cert_file} ({exc}); "
                "enroll again with a new token"
            ) from exc
    return context


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before reconnect `attempt` (0-based): exponential, capped, "equal jitter".

    Half the capped delay is fixed and half random, so a fleet that lost its broker at the
    same moment comes back spread out instead of all at once, and never retries in a spin.
    """
    cap = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2.0 ** min(attempt, 32))
    return cap / 2 + (rng or random).uniform(0, cap / 2)


DesiredHandler = Callable[[DesiredState], None]
CommandHandler = Callable[[Command], None]
StateProvider = Callable[[], DeviceState]


class AgentMqtt:
    """Owns the connection; other parts send through the outbox and get callbacks."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        state: StateProvider,
        on_desired: DesiredHandler,
        on_command: CommandHandler | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self._state = state
        self._on_desired = on_desired
        self._on_command = on_command
        self._connected = threading.Event()
        self._wake = outbox.appended  # set by every append to the outbox, whoever made it
        self._online = threading.Event()  # connected, or stopping: the drainer may run
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None
        # The outbox goes out at AGENT_PACE, inside what the control plane accepts from one
        # device (models/budget.py): a long outage's backlog follows at the steady rate instead
        # of being dropped as a flood. Drainer thread only.
        self._pace = Allowance(AGENT_PACE, time.monotonic())
        self._attempt = 0  # reconnect attempts since the last successful connect
        self.reconnects = 0  # connection losses and failed attempts, for metrics and tests
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; returns at once and keeps reconnecting until stop()."""
        try:
            self._client.connect_async(self.settings.host, self.settings.port, KEEPALIVE_S)
        except (OSError, ValueError) as exc:
            raise MqttError(
                f"cannot reach MQTT broker {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        self._client.loop_start()
        self._drainer = threading.Thread(target=self._drain_loop, name="mqtt-outbox", daemon=True)
        self._drainer.start()

    def stop(self, graceful: bool = True) -> None:
        """Publish online=false (when graceful) and disconnect."""
        self._stop.set()
        self._online.set()
        self._wake.set()
        if graceful and self.connected:
            offline = self._state().model_copy(update={"online": False})
            info = self._publish_state(offline)
            if info is not None:
                try:
                    info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    pass
        self._client.disconnect()
        self._client.loop_stop()
        if self._drainer is not None:
            self._drainer.join(timeout=5)

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or the timeout passes."""
        return self._connected.wait(timeout)

    def send(self, leaf: str, message: BaseModel, qos: int = 1, droppable: bool = False) -> None:
        """Queue a message for `ef/v1/devices/{id}/{leaf}`; it survives broker outages."""
        self.outbox.put(self.settings.device_id, leaf, message, qos=qos, droppable=droppable)

    def publish_state(self) -> None:
        """Publish the current retained state now if connected (it is also sent on connect)."""
        if self.connected:
            self._publish_state(self._state())

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.device_id,
            protocol=paho.MQTTv5,
        )
        client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(tls_context(s))
        will = DeviceState(online=False).model_dump_json().encode()
        client.will_set(device_topic(s.device_id, "state"), will, qos=1, retain=True)
        self._next_backoff(client)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        return client

    def _next_backoff(self, client: paho.Client) -> None:
        """Set paho's next reconnect wait (it sleeps that long, in 1 s steps, not spinning)."""
        delay = backoff_s(self._attempt)
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # floats work

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        self._attempt += 1
        self.reconnects += 1
        self._next_backoff(client)
        _LOGGER.debug("broker unreachable; next attempt in about %.1f s", backoff_s(self._attempt))

    def _publish_state(self, state: DeviceState) -> paho.MQTTMessageInfo | None:
        topic = device_topic(self.settings.device_id, "state")
        payload = state.model_dump_json().encode()
        if len(payload) > MAX_PAYLOAD_BYTES:  # the broker would hang up, on every reconnect
            _LOGGER.error(
                "state is %s bytes, over the broker's %s; publishing it without "
                "the hardware profile",
                len(payload),
                MAX_PAYLOAD_BYTES,
            )
            payload = state.model_copy(update={"hardware": {}}).model_dump_json().encode()
        return self._client.publish(topic, payload, qos=1, retain=True)

    def _handle_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            _LOGGER.warning("broker refused the connection: %s", reason)
            return
        device = self.settings.device_id
        client.subscribe([(device_topic(device, "desired"), 1), (device_topic(device, "cmd"), 1)])
        self._attempt = 0
        self._next_backoff(client)
        self._connected.set()
        self._publish_state(self._state())
        self._online.set()
        self._wake.set()
        _LOGGER.info("connected to %s:%s", self.settings.host, self.settings.port)

    def _handle_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self._connected.clear()
        self._attempt += 1
        self.reconnects += 1
        self._next_backoff(client)
        if not self._stop.is_set():
            self._online.clear()
            if self._stop.is_set():  # stop() set it between our check and the clear
                self._online.set()
            _LOGGER.warning("disconnected from broker (%s); reconnecting", reason)

    def _handle_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        # One bad message must never kill the network loop.
        try:
            leaf = msg.topic.rsplit("/", 1)[-1]
            if leaf == "desired":
                if not msg.payload:
                    return
                self._on_desired(DesiredState.model_validate_json(msg.payload))
            elif leaf == "cmd" and self._on_command is not None:
                self._on_command(Command.model_validate_json(msg.payload))
        except ValidationError as exc:
            _LOGGER.warning("ignoring malformed message on %s: %s", msg.topic, exc)
            if msg.topic.endswith("/cmd"):
                self._refuse_command(msg.payload, exc)
        except Exception:
            _LOGGER.exception("handler for %s failed", msg.topic)

    def _refuse_command(self, payload: bytes | bytearray, exc: ValidationError) -> None:
        """Answer a command we cannot read (one a newer control plane added, say) by its id."""
        try:
            request_id = json.loads(payload).get("request_id")
        except (ValueError, AttributeError):
            return
        if isinstance(request_id, str) and request_id:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            answer = CommandResult(request_id=request_id, ok=False, error=f"cannot run: {problem}")
            self.send("cmd/result", answer)

    def _paced(self, batch: list[OutboxEntry]) -> tuple[list[OutboxEntry], float]:
        """The head of `batch` the pace lets out now; with none, the seconds until one may go."""
        now = time.monotonic()
        for i, entry in enumerate(batch):
            wait = self._pace.spend(len(entry.payload), now)
            if wait > 0:
                return batch[:i], wait
        return batch, 0.0

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            if not self.connected:
                self._online.wait()  # sends while offline wait in the outbox, not in a spin
                continue
            self._wake.wait(timeout=IDLE_WAKE_S)
            if self._stop.is_set():
                return
            if not self.connected:
                continue
            batch = self.outbox.peek(DRAIN_BATCH)
            if not batch:
                self._wake.clear()
                if not self.outbox.peek(1):
                    continue
                batch = self.outbox.peek(DRAIN_BATCH)
            batch, wait = self._paced(batch)
            if not batch:
                self._stop.wait(wait)
                continue
            sent = [(e.seq, self._client.publish(e.topic, e.payload, e.qos)) for e in batch]
            acked: list[int] = []
            for seq, info in sent:
                try:
                    info.wait_for_publish(timeout=ACK_TIMEOUT_S)
                except (RuntimeError, ValueError):
                    break
                if not info.is_published():
                    break
                acked.append(seq)  # only the in-order prefix leaves; the rest is resent
            self.outbox.ack(acked)
            if len(acked) < len(sent):
                self._stop.wait(RESEND_PAUSE_S)
