"""The external mode's packet reader against gmqtt's ``_read_packet`` contract: its read loop
appends each read to a buffer, calls the reader, and keeps what it did not take. The stream here
is a mix of plain QoS 1 PUBLISHes, ones with properties, QoS 0 and other packets, cut into reads
at random places (over many seeds); every packet must come out once, whole and in order, the plain
ones taken and the rest handed on as gmqtt's own reader would. gmqtt's connection and handler are
stood in for by two small objects with the attributes the reader reads (the real ones need a live
broker; tests/broker/test_external.py runs those against mosquitto)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from gateway.broker import external_reader, wire


def publish(
    topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, props: bytes = b"\0", flags: int = 0
) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + props + payload
    return bytes([0x30 | qos << 1 | flags]) + wire.encode_remaining_length(len(body)) + body


def stream(rng: random.Random) -> tuple[bytes, list[tuple[str, Any]]]:
    """Packets and what should come of each: ("take", (mid, payload, topic)) or ("put", (cmd, body))."""
    data, want = b"", []
    for i in range(rng.randrange(1, 60)):
        kind = rng.choice(["plain", "plain", "plain", "props", "qos0", "ping", "big", "odd-topic"])
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        mid = rng.randrange(1, 65536)
        if kind == "big":  # a remaining length of three bytes
            payload = b"x" * rng.randrange(16_384, 40_000)
        if kind in ("plain", "big"):
            topic = f"devices/d{i}/metrics"
            packet = publish(topic.encode(), payload, mid=mid, flags=rng.choice([0, 8, 1]))
            want.append(("take", (mid, payload, topic)))
        elif kind == "ping":
            packet = bytes([0xD0, 0])
            want.append(("put", (0xD0, b"")))
        else:
            topic = b"devices/\xff/metrics" if kind == "odd-topic" else b"devices/d/metrics"
            qos = 0 if kind == "qos0" else 1
            packet = publish(
                topic, payload, qos=qos, mid=mid, props=b"\x02\x23\x00" if kind == "props" else b"\0"
            )
            head = wire.fixed_header(packet, 0, 1 << 28)
            assert head is not None
            want.append(("put", (packet[0], packet[head[0] :])))
        data += packet
    return data, want


class Stand:
    """gmqtt's handler and connection, as far as the reader reads them."""

    def __init__(self, version: int = MQTTv50) -> None:
        self.got: list[tuple[str, Any]] = []
        self.connection = SimpleNamespace(put_package=self.put, _last_data_in=0.0)
        self.handler = SimpleNamespace(
            current_connection=self.connection, _connection_state=SimpleNamespace(protocol_version=version)
        )

    def put(self, package: Any) -> None:
        self.got.append(("put", (package.cmd, package.data)))

    def take(self, mid: int, payload: bytes, topic: str, connection: Any) -> None:
        assert connection is self.connection
        self.got.append(("take", (mid, payload, topic)))


def feed(read: Any, data: bytes, rng: random.Random) -> bytes:
    """gmqtt's read loop: reads of random sizes, each appended to what was left; returns the rest."""
    buf, pos = b"", 0
    while pos < len(data):
        n = rng.choice([1, 2, 3, 7, 100, 4096, 65536])
        buf += data[pos : pos + n]
        pos += n
        taken = read(buf)
        assert taken >= 0
        buf = buf[taken:]
    return buf


@pytest.mark.parametrize("seed", range(40))
def test_every_packet_comes_out_once_whole_and_in_order_however_the_stream_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    data, want = stream(rng)
    stand = Stand()
    rest = feed(external_reader.reader(stand.handler, stand.connection, stand.take), data, rng)
    assert rest == b""
    assert stand.got == want
    assert stand.connection._last_data_in > 0  # gmqtt's keepalive sees the traffic


def test_under_mqtt_311_and_on_a_superseded_connection_every_packet_goes_gmqtts_way() -> None:
    packet = publish(b"devices/d/metrics", b"{}", mid=7)
    for stand in (Stand(MQTTv311), Stand()):
        read = external_reader.reader(stand.handler, stand.connection, stand.take)
        if stand.handler._connection_state.protocol_version == MQTTv50:
            stand.handler.current_connection = object()  # a reconnect made another one current
        assert read(packet) == len(packet)
        assert stand.got == [("put", (packet[0], packet[2:]))]


def test_a_malformed_length_ends_the_connection() -> None:
    stand = Stand()
    read = external_reader.reader(stand.handler, stand.connection, stand.take)
    assert read(bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])) == -1
    assert stand.got == []
