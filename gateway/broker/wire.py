"""MQTT 3.1.1 wire details the broker needs on its hot path: framing limits and PUBLISH.

Pure functions over bytes. amqtt's own codecs (``amqtt.mqtt.*``) still parse CONNECT, SUBSCRIBE and
UNSUBSCRIBE and build CONNACK, SUBACK and UNSUBACK; PUBLISH and the fixed acknowledgements are
done here because they are per message: amqtt decodes a PUBLISH through a chain of awaited reads
(one per field) and copies the payload twice, which dominated the ingest profile.

References: MQTT 3.1.1 (OASIS, 2014) section 2.2 (fixed header, remaining length), 3.3 (PUBLISH),
3.4-3.7 (PUBACK, PUBREC, PUBREL, PUBCOMP), 3.12/3.13 (PINGREQ/PINGRESP).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# Fixed-header flags a client MUST send for each packet type it may send [MQTT-2.2.2-1/2];
# PUBLISH's flags carry DUP/QoS/RETAIN and are checked in parse_publish.
CLIENT_FLAGS = {
    CONNECT: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    UNSUBSCRIBE: 2,
    PINGREQ: 0,
    DISCONNECT: 0,
}

MAX_REMAINING_LENGTH_BYTES = 4  # 268,435,455 bytes at most [MQTT-2.2.3]

PINGRESP_BYTES = bytes((PINGRESP << 4, 0))


class MalformedPacket(ValueError):
    """The bytes break MQTT 3.1.1; the connection must be closed [MQTT-4.8.0-1]."""


class PacketTooLarge(ValueError):
    """A remaining length beyond the configured maximum, seen before any of the body is read."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"packet of {length} bytes exceeds the limit of {limit}")


def remaining_length_step(value: int, multiplier: int, byte: int) -> tuple[int, int, bool]:
    """One byte of the variable-length encoding: returns (value, next multiplier, done)."""
    value += (byte & 0x7F) * multiplier
    if byte & 0x80 == 0:
        return value, multiplier, True
    if multiplier >= 128**3:
        raise MalformedPacket("remaining length longer than 4 bytes")
    return value, multiplier * 128, False


def fixed_header(data: bytes, pos: int, limit: int) -> tuple[int, int] | None:
    """The packet starting at ``data[pos]``: (where its body starts, its remaining length), or
    None while its fixed header is incomplete. :class:`PacketTooLarge` as soon as the length is
    known to pass ``limit``, before any of the body is buffered [MQTT-2.2.3]."""
    end = len(data)
    i = pos + 1
    value, multiplier = 0, 1
    while True:
        if i >= end:
            return None
        byte = data[i]
        i += 1
        value += (byte & 0x7F) * multiplier
        if byte < 0x80:
            break
        if multiplier >= 128**3:
            raise MalformedPacket("remaining length longer than 4 bytes")
        multiplier *= 128
    if value > limit:
        raise PacketTooLarge(value, limit)
    return i, value


def decode_remaining_length(data: bytes) -> tuple[int, int]:
    """(remaining length, bytes used) from the bytes after the first header byte; for tests and tools."""
    value, multiplier = 0, 1
    for i, byte in enumerate(data[:MAX_REMAINING_LENGTH_BYTES]):
        value, multiplier, done = remaining_length_step(value, multiplier, byte)
        if done:
            return value, i + 1
    raise MalformedPacket("truncated remaining length")


def encode_remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte = length % 128
        length //= 128
        if length:
            byte |= 0x80
        out.append(byte)
        if not length:
            return bytes(out)


def check_flags(packet_type: int, flags: int) -> None:
    expected = CLIENT_FLAGS.get(packet_type)
    if expected is None and packet_type != PUBLISH:
        raise MalformedPacket(f"packet type {packet_type} is not one a client may send")
    if expected is not None and flags != expected:
        raise MalformedPacket(f"packet type {packet_type} with reserved flags {flags:#x}")


class Publish(NamedTuple):
    """One PUBLISH as received (a named tuple: one per message, and a frozen dataclass takes
    three times as long to make)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    retain: bool
    dup: bool


def _utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not UTF-8") from exc  # [MQTT-1.5.3-1]
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000")  # [MQTT-1.5.3-2]
    return text


def parse_publish(flags: int, body: bytes) -> Publish:
    """Decode a PUBLISH body (everything after the fixed header) [MQTT-3.3]."""
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    if len(body) < 2:
        raise MalformedPacket("PUBLISH without a topic")
    (topic_len,) = struct.unpack_from("!H", body)
    pos = 2 + topic_len
    if len(body) < pos + (2 if qos else 0):
        raise MalformedPacket("PUBLISH shorter than its topic")
    topic = _utf8(body[2:pos], "topic name")
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
        if packet_id == 0:
            raise MalformedPacket("PUBLISH with packet identifier 0")  # [MQTT-2.3.1-1]
    return Publish(topic, body[pos:], qos, packet_id, bool(flags & 1), bool(flags & 8))


def parse_packet_id(body: bytes) -> int:
    """PUBACK, PUBREC, PUBREL, PUBCOMP: a two-byte packet identifier and nothing else."""
    if len(body) != 2:
        raise MalformedPacket("acknowledgement of the wrong length")
    return int(struct.unpack("!H", body)[0])


def ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK/PUBREC/PUBCOMP (flags 0) or PUBREL (flags 2) for a packet identifier."""
    flags = 2 if packet_type == PUBREL else 0
    return struct.pack("!BBH", packet_type << 4 | flags, 2, packet_id)


def encode_publish(
    topic: str, payload: bytes, qos: int, packet_id: int | None, *, dup: bool = False
) -> bytes:
    """A PUBLISH from the broker to a client (never retained: we keep no retained store)."""
    raw_topic = topic.encode("utf-8")
    variable = struct.pack("!H", len(raw_topic)) + raw_topic
    if qos:
        variable += struct.pack("!H", packet_id or 0)
    first = PUBLISH << 4 | (8 if dup else 0) | qos << 1
    return bytes((first,)) + encode_remaining_length(len(variable) + len(payload)) + variable + payload
