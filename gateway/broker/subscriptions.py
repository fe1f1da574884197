"""SUBSCRIBE and UNSUBSCRIBE from a connected device: parsed with amqtt's codecs, each filter put
to the broker core (whose topic plugins keep a device inside ``devices/{its id}/``), answered with
the SUBACK or UNSUBACK bytes. A packet that does not parse raises :class:`wire.MalformedPacket`.
"""

from __future__ import annotations

import logging

from amqtt.adapters import BufferReader
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from gateway.broker import wire
from gateway.broker.hub import Hub
from gateway.broker.session import LeanSession

log = logging.getLogger("gateway.broker.connection")  # one logger for a connection's story

SUBACK_FAILURE = 0x80
BAD_PACKET = (AMQTTError, MQTTError, NoDataError, ValueError, IndexError)


async def subscribe(core: Hub, session: LeanSession, flags: int, body: bytes, who: str) -> bytes:
    """The SUBACK for a SUBSCRIBE body: one code per filter, QoS granted at most 1."""
    try:
        packet = await SubscribePacket.from_stream(
            BufferReader(body), fixed_header=MQTTFixedHeader(wire.SUBSCRIBE, flags, len(body))
        )
    except BAD_PACKET as exc:
        raise wire.MalformedPacket(f"SUBSCRIBE: {exc}") from exc
    topics = packet.payload.topics
    if not topics or any(qos > 2 for _, qos in topics):
        raise wire.MalformedPacket("SUBSCRIBE without topics or with QoS 3")  # [MQTT-3.8.3-3/4]
    codes = []
    for topic_filter, qos in topics:
        code = await core.add_subscription((topic_filter, min(qos, 1)), session)
        if code == SUBACK_FAILURE:
            core.stats.inc("subscribe_refused")
            log.warning("mqtt %s: SUBSCRIBE to %r refused", who, topic_filter[:200])
        codes.append(code)
    return bytes(SubackPacket.build(packet.variable_header.packet_id, codes).to_bytes())


async def unsubscribe(core: Hub, session: LeanSession, flags: int, body: bytes) -> bytes:
    """The UNSUBACK for an UNSUBSCRIBE body, its filters removed."""
    try:
        packet = await UnsubscribePacket.from_stream(
            BufferReader(body), fixed_header=MQTTFixedHeader(wire.UNSUBSCRIBE, flags, len(body))
        )
    except BAD_PACKET as exc:
        raise wire.MalformedPacket(f"UNSUBSCRIBE: {exc}") from exc
    for topic_filter in packet.payload.topics:
        core._del_subscription(topic_filter, session)
    return bytes(UnsubackPacket.build(packet.variable_header.packet_id).to_bytes())
