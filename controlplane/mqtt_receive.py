"""The bridge's paho client, with a receive path that builds nothing the bridge never reads.

For every incoming PUBLISH, paho builds an `MQTTMessage` (with an `MQTTMessageInfo` and its
`threading.Condition`), parses the MQTT v5 properties into a `Properties` object and runs its
topic matcher for per-topic callbacks. Profiled at 10,000 devices that was 30 % of the control
plane's CPU; the bridge reads no properties and registers no per-topic callbacks. This client
reads the topic, packet id and payload straight from the packet and hands them to a sink.
It also reads the socket a chunk at a time: paho asks for one packet's command byte, length
bytes and body in separate `recv` calls (three system calls a message). Everything else
(connect, subscribe, publish, acks, reconnects, QoS 2) stays paho's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

# topic (raw bytes), payload, packet id, QoS; QoS 1 messages are acknowledged by the sink's owner
PublishSink = Callable[[bytes, bytes, int, int], None]
READ_CHUNK = 65536  # bytes asked of the socket at once


class LeanReceiveClient(mqtt.Client):
    """paho's `Client`; QoS 0 and 1 PUBLISH packets go to `sink` instead of `on_message`."""

    def __init__(self, *args: Any, sink: PublishSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not kwargs.get("manual_ack"):
            raise ValueError("LeanReceiveClient acknowledges nothing itself: pass manual_ack=True")
        self._sink = sink
        self._v5 = kwargs.get("protocol") == MQTTProtocolVersion.MQTTv5
        self._read_buffer = b""  # received, not yet handed to paho's packet reader
        self._read_at = 0
        self._read_socket: object = None  # the connection the buffer came from

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_socket is not self._sock:  # a new connection: drop the old one's bytes
            self._read_buffer, self._read_at, self._read_socket = b"", 0, self._sock
        if self._read_at >= len(self._read_buffer):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there
            if not data:
                return data  # the broker closed the connection
            self._read_buffer, self._read_at = data, 0
        chunk = self._read_buffer[self._read_at : self._read_at + bufsize]
        self._read_at += len(chunk)
        return chunk

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's, then again while buffered bytes wait (select() cannot see them)."""
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._read_at < len(self._read_buffer):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2:  # needs paho's PUBREC/PUBREL bookkeeping; the fleet never sends it
            return super()._handle_publish()
        packet: bytes = bytes(self._in_packet["packet"])
        try:
            topic, payload, mid = split_publish(packet, qos=qos, v5=self._v5)
        except ValueError:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL  # paho drops the connection, as it would
        self._sink(topic, payload, mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def split_publish(packet: bytes, *, qos: int, v5: bool) -> tuple[bytes, bytes, int]:
    """Topic, payload and packet id of a PUBLISH packet's variable header and payload."""
    if len(packet) < 2:
        raise ValueError("PUBLISH shorter than its topic length")
    end = 2 + int.from_bytes(packet[0:2], "big")
    if end > len(packet):
        raise ValueError("PUBLISH shorter than its topic")
    topic = packet[2:end]
    mid = 0
    if qos > 0:
        if len(packet) < end + 2:
            raise ValueError("PUBLISH without its packet id")
        mid = int.from_bytes(packet[end : end + 2], "big")
        end += 2
    if v5:  # skip the properties: a variable byte integer length, then that many bytes
        length, shift = 0, 0
        while True:
            if end >= len(packet) or shift > 21:
                raise ValueError("PUBLISH with a malformed property length")
            byte = packet[end]
            end += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        end += length
    if end > len(packet):
        raise ValueError("PUBLISH shorter than its properties")
    return topic, packet[end:], mid
