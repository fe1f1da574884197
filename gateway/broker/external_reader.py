"""The external mode's read path: the site broker's stream into packets, and its plain QoS 1
PUBLISH read without gmqtt's packet layers.

gmqtt's own reader made a ``Package`` per packet and sent it through three calls and a try block
to a handler that builds three struct formats, a properties dict and a debug line for every
message; it read each remaining length byte by byte in a loop of its own. Here one loop splits a
read into packets (:func:`gateway.broker.wire.fixed_header`, the embedded broker's), and a PUBLISH
of the plain kind nearly every message is (QoS 1, MQTT 5, no properties, a UTF-8 topic) is read in
two slices and taken. Anything else goes the way gmqtt's reader sends it.

gmqtt's seams used (it is pinned to 0.8.x; tests/broker/test_external*.py fail if one moves): a
connection's ``_protocol._read_packet`` (its read loop calls it with what it has buffered and
keeps what it does not take), ``put_package`` and ``_last_data_in``, and the handler's
``current_connection`` and ``_connection_state``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.package import Package

from gateway.broker import wire

MAX_REMAINING = (1 << 28) - 1  # the longest a 4-byte remaining length says [MQTT 5, 1.5.5]
PLAIN_QOS1 = 0x32  # PUBLISH at QoS 1, under the mask below (DUP and RETAIN may be set)
TYPE_AND_QOS = 0xF6

Take = Callable[[int, bytes, str, Any], None]  # (packet id, payload, topic, connection)


def plain_qos1(raw: bytes) -> tuple[int, bytes, str] | None:
    """(packet id, payload, topic) of an MQTT 5 QoS 1 PUBLISH body with no properties and a UTF-8
    topic; None for any other."""
    end = 2 + int.from_bytes(raw[:2], "big")  # the topic's end; then the packet id
    if end <= 2 or len(raw) <= end + 2 or raw[end + 2] != 0:
        return None
    try:
        topic = raw[2:end].decode()
    except UnicodeDecodeError:
        return None
    return int.from_bytes(raw[end : end + 2], "big"), raw[end + 3 :], topic


def install(handler: Any, take: Take) -> None:
    """Our reader in gmqtt's place on the handler's current connection (from its CONNACK on)."""
    connection = handler.current_connection
    connection._protocol._read_packet = reader(handler, connection, take)


def reader(handler: Any, connection: Any, take: Take) -> Callable[[bytes], int]:
    """gmqtt's ``_read_packet`` contract: split ``data`` into packets, return how many bytes were
    taken (-1: a malformed length, and gmqtt drops the connection)."""
    put = connection.put_package

    def read_packets(data: bytes) -> int:
        current = handler.current_connection is connection  # else gmqtt's put_package drops them
        v5 = current and handler._connection_state.protocol_version == MQTTv50
        pos, end = 0, len(data)
        while pos < end:
            try:
                header = wire.fixed_header(data, pos, MAX_REMAINING)
            except wire.MalformedPacket:
                return -1
            if header is None or header[0] + header[1] > end:
                break  # the rest comes with the next read
            start, length = header
            cmd, pos = data[pos], start + length
            body = data[start:pos]
            plain = plain_qos1(body) if v5 and cmd & TYPE_AND_QOS == PLAIN_QOS1 else None
            if plain is None:
                put(Package(cmd, body))
            else:
                take(*plain, connection)
        connection._last_data_in = time.monotonic()  # its keepalive's clock, as put_package sets it
        return pos

    return read_packets
