"""The CLI's own MQTT connection for `edgefleet-cp devices command` (it has no bridge).

It connects as the control plane's user, publishes the command (waiting for the PUBACK) and
collects the device's `cmd/result` answers, so `--wait` works without a running server; the
CLI records the answer itself (the first answer wins, so a server recording it too is harmless).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import BaseModel, ValidationError

from controlplane.broker_sync import control_plane_mqtt_password
from controlplane.core.config import Settings
from controlplane.errors import BridgeError
from models.protocol import CommandResult, device_topic

CONNECT_TIMEOUT_S = 10.0
PUBACK_TIMEOUT_S = 10.0


class CommandLink:
    """One short MQTT connection: publish a command, collect answers for one device."""

    def __init__(self, settings: Settings, device_id: str) -> None:
        self.connected = threading.Event()
        self.results: queue.Queue[CommandResult] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-cp-cli-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(
            settings.mqtt_cp_username, control_plane_mqtt_password(settings)
        )
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._result_topic = device_topic(device_id, "cmd/result")
        try:
            self._client.connect(settings.mqtt_host, settings.mqtt_port)
        except OSError as exc:
            raise BridgeError(
                f"cannot reach the MQTT broker at {settings.mqtt_host}:{settings.mqtt_port}: {exc}"
            ) from exc
        self._client.subscribe(self._result_topic, qos=1)
        self._client.loop_start()
        if self._subscribed.wait(CONNECT_TIMEOUT_S):
            self.connected.set()

    def publish(self, topic: str, model: BaseModel, *, qos: int = 1, retain: bool = False) -> Any:
        """Publish and wait for the broker's PUBACK; BridgeError when it does not come."""
        info = self._client.publish(topic, model.model_dump_json(), qos=qos, retain=retain)
        try:
            info.wait_for_publish(PUBACK_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            raise BridgeError(f"cannot publish to {topic}: {exc}") from exc
        if not info.is_published():
            raise BridgeError(f"the broker did not acknowledge {topic}")
        return info

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.results.put(CommandResult.model_validate_json(msg.payload))
        except ValidationError:
            pass  # not ours to judge; the server's bridge counts invalid messages

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def await_result(link: CommandLink, request_id: str, timeout: float) -> CommandResult | None:
    """The device's answer to `request_id`, or None when none came within `timeout` seconds."""
    try:
        while True:
            result = link.results.get(timeout=timeout)
            if result.request_id == request_id:
                return result
    except queue.Empty:
        return None
