"""The bridge's lean PUBLISH parsing (the whole path runs against Mosquitto in test_bridge).

`LeanReceiveClient` overrides private parts of paho's `Client` (pyproject.toml pins paho-mqtt
<2.3 for that): the tests below fail when a paho release renames or reshapes them, instead of
the bridge quietly falling back to paho's own, slower receive path.
"""

from __future__ import annotations

import inspect
import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controlplane.mqtt_receive import LeanReceiveClient, split_publish


def publish_packet(topic: bytes, payload: bytes, *, mid: int | None, props: bytes | None) -> bytes:
    """A PUBLISH variable header and payload as a broker sends it (fixed header excluded)."""
    out = len(topic).to_bytes(2, "big") + topic
    if mid is not None:
        out += mid.to_bytes(2, "big")
    if props is not None:
        out += props
    return out + payload


def v5_properties() -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("trace", "x" * 200)  # long enough for a two-byte length
    props.MessageExpiryInterval = 60
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return packed


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("v5", [False, True])
def test_topic_packet_id_and_payload_are_read_whatever_the_properties(qos: int, v5: bool) -> None:
    props = v5_properties() if v5 else None
    packet = publish_packet(
        b"ef/v1/devices/d1/state", b'{"online":true}', mid=7 if qos else None, props=props
    )
    assert split_publish(packet, qos=qos, v5=v5) == (
        b"ef/v1/devices/d1/state",
        b'{"online":true}',
        7 if qos else 0,
    )


def test_an_empty_property_block_and_payload() -> None:
    packet = publish_packet(b"t", b"", mid=1, props=b"\x00")
    assert split_publish(packet, qos=1, v5=True) == (b"t", b"", 1)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x00",  # no room for the topic length
        b"\x00\x09short",  # topic longer than the packet
        b"\x00\x01t",  # QoS 1 without its packet id
        b"\x00\x01t\x00\x01\x05ab",  # properties longer than the packet
        b"\x00\x01t\x00\x01\xff\xff\xff\xff\xff",  # property length over four bytes
    ],
)
def test_a_truncated_packet_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        split_publish(packet, qos=1, v5=True)


def test_the_client_insists_on_manual_acks() -> None:
    with pytest.raises(ValueError, match="manual_ack"):
        LeanReceiveClient(
            CallbackAPIVersion.VERSION2,
            protocol=MQTTProtocolVersion.MQTTv5,
            sink=lambda *_: None,
        )


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("_sock_recv", ["self", "bufsize"]),
        ("_handle_publish", ["self"]),
        ("loop_read", ["self", "max_packets"]),
    ],
)
def test_paho_still_has_the_methods_the_client_overrides(
    method: str, parameters: list[str]
) -> None:
    assert method in vars(mqtt.Client), f"paho's Client has no {method} any more"
    assert list(inspect.signature(getattr(mqtt.Client, method)).parameters) == parameters


def test_paho_still_keeps_the_packet_being_read_where_the_client_reads_it() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    assert {"command", "packet"} <= set(client._in_packet)
    assert client._sock is None


class CountingSocket:
    """A socket (paho's `SocketLike`) whose `recv` calls are counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recv_calls = 0

    def recv(self, buffer_size: int) -> bytes:
        self.recv_calls += 1
        return self.sock.recv(buffer_size)

    def send(self, buffer: bytes | bytearray) -> int:
        return self.sock.send(buffer)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)


def test_packets_arriving_together_are_all_handled_in_one_read() -> None:
    got: list[tuple[bytes, bytes, int, int]] = []
    client = LeanReceiveClient(
        CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
        sink=lambda *message: got.append(message),
    )
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    counted = CountingSocket(ours)
    client._sock = counted  # as if connected; the socket is all loop_read uses
    try:
        first = publish_packet(b"t/1", b"one", mid=1, props=b"\x00")
        second = publish_packet(b"t/2", b"two" * 100, mid=2, props=b"\x00")
        # fixed headers: PUBLISH with QoS 1, then the remaining length (one byte, two bytes)
        broker.sendall(b"\x32" + bytes([len(first)]) + first)
        broker.sendall(b"\x32" + bytes([len(second) & 0x7F | 0x80, len(second) >> 7]) + second)
        assert client.loop_read() == 0
        assert got == [(b"t/1", b"one", 1, 1), (b"t/2", b"two" * 100, 2, 1)]
        assert counted.recv_calls == 1  # paho's own path asks for each packet in three calls
    finally:
        client._sock = None
        ours.close()
        broker.close()
