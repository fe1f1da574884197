"""One device connection on the embedded broker: read, bound, check, hand over, acknowledge.

This replaces amqtt's per-client machinery (``BrokerProtocolHandler``, its reader task, the four
waiter tasks of ``Broker._client_message_loop`` and one task per received packet) with a single
coroutine per connection that reads a packet, acts on it, and reads the next. It still speaks to
amqtt's broker core for everything shared: sessions (``broker._sessions``), subscriptions,
the plugin chain (authentication and topic rules), the broadcast queue. amqtt calls back into this
object through the handler interface it expects (``mqtt_publish``, ``stop``,
``handle_connection_closed``). From CONNECT to CONNACK it follows :mod:`gateway.broker.handshake`.

Bounds, all enforced here (MQTT 3.1.1 references in brackets):
- a packet's remaining length is read from the fixed header and checked against
  ``max_packet_bytes`` *before* any of the body is read or buffered; beyond it the connection is
  dropped;
- anything that breaks the protocol (unknown or server-only packet types, reserved flags, bad
  UTF-8, QoS 3, a second CONNECT, a first packet that is not CONNECT) closes this connection only
  [MQTT-4.8.0-1];
- the keep-alive: no packet within 1.5 times the client's keep-alive, or no CONNECT within
  ``connect_timeout_s``, and the broker's sweeper closes the connection [MQTT-3.1.2-24];
- outgoing bytes: a client that does not read its acknowledgements and messages is dropped once
  its socket write buffer passes ``MAX_WRITE_BUFFER_BYTES``; nothing awaits a slow client;
- messages in flight to a client: at most ``max_queued_messages``, the oldest dropped first.

Refused PUBLISH (a topic outside ``devices/{own id}/``): MQTT 3.1.1 gives the server no negative
acknowledgement for PUBLISH and lets it either acknowledge normally or close the connection
[MQTT-3.3.5-2]. We close it: a positive PUBACK would tell the device its data arrived when it was
thrown away, and the closed connection shows in the device's own logs. The refusal is logged and
counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import partial
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import OutgoingApplicationMessage

from gateway.broker import handshake, rules, wire
from gateway.broker.hub import Hub
from gateway.broker.session import LeanSession

log = logging.getLogger(__name__)

MAX_WRITE_BUFFER_BYTES = 1 << 20
KEEPALIVE_GRACE = 1.5  # [MQTT-3.1.2-24]

SUBACK_FAILURE = 0x80


class Connection:
    """One client's socket, from CONNECT to close. Also amqtt's "handler" for its session."""

    __slots__ = (
        "clean_exit",
        "core",
        "counted",
        "deadline",
        "device_id",
        "key",
        "peer",
        "qos2_in",
        "reader",
        "session",
        "task",
        "transport",
        "writer",
    )

    def __init__(self, core: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.core = core
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.deadline = core.now() + core.limits.connect_timeout_s
        self.session: LeanSession | None = None
        self.device_id: str | None = None
        self.key: str | None = None
        self.qos2_in: set[int] | None = None
        self.clean_exit = False
        self.counted = False
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    # -- the handler interface amqtt's broker core calls ---------------------------------------

    async def stop(self) -> None:
        self.abort("session closed by the broker")

    async def handle_connection_closed(self) -> None:
        self.abort("connection closed")

    async def mqtt_publish(
        self, topic: str, data: bytes, qos: int | None, retain: bool, ack_timeout: Any = None
    ) -> None:
        self.send_publish(topic, bytes(data), qos or 0)

    # -- output --------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        if not self.transport.is_closing():
            log.debug("mqtt %s (%s): closing: %s", self.device_id or "-", self.peer, reason)
            self.transport.abort()

    def _ack_when_durable(self, ack: bytes, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.core.stats.inc("hook_errors")
            log.error(
                "mqtt %s: ingest failed (%r); not acknowledged, closing",
                self.device_id,
                fut.exception() if not fut.cancelled() else "cancelled",
            )
            self.abort("ingest failed")
            return
        self._write(ack)

    def _write(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.core.stats.inc("slow_consumers")
            log.warning("mqtt %s (%s): not reading what we send, dropping it", self.device_id, self.peer)
            self.abort("slow consumer")

    def send_publish(self, topic: str, data: bytes, qos: int) -> None:
        """Deliver to this client now: QoS 0 or 1 (we grant at most 1)."""
        session = self.session
        assert session is not None
        packet_id = None
        if qos:
            qos = 1
            packet_id = session.next_packet_id
            inflight = session.inflight_out
            while len(inflight) >= self.core.limits.max_queued_messages:
                inflight.popitem(last=False)  # unacknowledged for longest: drop it
                self.core.stats.inc("queue_dropped")
            inflight[packet_id] = OutgoingApplicationMessage(packet_id, topic, qos, data, False)
        self.core.stats.inc("delivered")
        self._write(wire.encode_publish(topic, data, qos, packet_id))

    # -- input ---------------------------------------------------------------------------------

    async def _read_packet(self) -> tuple[int, int, bytes]:
        """(type, flags, body); the length is checked before the body is read [MQTT-2.2.3]."""
        readexactly = self.reader.readexactly
        first = (await readexactly(1))[0]
        value, multiplier, done = 0, 1, False
        while not done:
            value, multiplier, done = wire.remaining_length_step(value, multiplier, (await readexactly(1))[0])
        limit = self.core.limits.max_packet_bytes
        if value > limit:
            raise wire.PacketTooLarge(value, limit)
        body = await readexactly(value) if value else b""
        return first >> 4, first & 0x0F, body

    def _touch(self) -> None:
        keep_alive = self.session.keep_alive if self.session is not None else 0
        self.deadline = self.core.now() + keep_alive * KEEPALIVE_GRACE if keep_alive else float("inf")

    async def run(self) -> None:
        core = self.core
        try:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                # keep-alive 0 means "no MQTT keep-alive": let TCP find the dead peers instead
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if await self._handshake():
                await self._serve()
        except wire.PacketTooLarge as exc:
            core.stats.inc("oversized")
            log.warning("mqtt %s (%s): %s, dropped", self.device_id or "-", self.peer, exc)
        except wire.MalformedPacket as exc:
            core.stats.inc("malformed")
            log.warning("mqtt %s (%s): malformed packet (%s), dropped", self.device_id or "-", self.peer, exc)
        except handshake.Refused:
            pass
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the peer went away, or we aborted the transport (timeout, take-over, stop)
        except Exception:  # whatever a client sends, the broker stays up
            core.stats.inc("internal_errors")
            log.exception("mqtt %s (%s): unexpected error, connection dropped", self.device_id, self.peer)
        finally:
            if self.clean_exit:
                self.writer.close()
            else:
                self.transport.abort()
            await self._finish()

    async def _handshake(self) -> bool:
        """CONNECT in, checked, authenticated and given its session; CONNACK out. False never:
        a refusal raises (:class:`~gateway.broker.handshake.Refused` after its CONNACK, or a
        protocol error)."""
        core = self.core
        ptype, flags, body = await self._read_packet()
        # A whole first packet is in: no longer one of the pending sockets the newest may push out
        # (checking it is in-memory work; it ends in a CONNACK or a close right away).
        core.pending.pop(self, None)
        if ptype != wire.CONNECT:
            raise wire.MalformedPacket("first packet is not CONNECT")  # [MQTT-3.1.0-1]
        try:
            packet = await handshake.parse_connect(flags, body)
            handshake.check_connect(packet)
            session = handshake.new_session(
                packet, self.peer, self.writer.get_extra_info("ssl_object"), core.limits.max_queued_messages
            )
            self.device_id = await handshake.authenticate(core, session, self.peer)
            self.key = rules.session_key(self.device_id, session.client_id)
            session = await handshake.find_session(core, session, self.device_id, self.key, self, self.peer)
        except handshake.Refused as refused:
            if refused.code is not None:
                self._connack(0, refused.code)
            raise
        self._accept(session)
        return True

    def _accept(self, session: LeanSession) -> None:
        core, device_id, key = self.core, self.device_id, self.key
        assert device_id is not None and key is not None
        session.client_id = key
        self.session = session
        session.connect()
        core._sessions[key] = (session, self)
        core.device_conns[device_id] = core.device_conns.get(device_id, 0) + 1
        self.counted = True
        core.authenticated += 1
        core.stats.inc("accepted")
        self._connack(session.parent if not session.clean_session else 0, handshake.CONNACK_ACCEPTED)
        self._touch()
        self._redeliver(session)

    def _connack(self, session_present: int, code: int) -> None:
        self._write(ConnackPacket.build(session_present, code).to_bytes())

    def _redeliver(self, session: LeanSession) -> None:
        """Unacknowledged messages again with DUP [MQTT-4.4.0-1], then what queued while offline."""
        for packet_id, message in list(session.inflight_out.items()):
            self._write(wire.encode_publish(message.topic, bytes(message.data), 1, packet_id, dup=True))
        outbox = session.retained_messages
        while not outbox.empty():
            topic, data, qos = outbox.get_nowait()
            self.send_publish(topic, data, qos)

    async def _serve(self) -> None:
        while True:
            ptype, flags, body = await self._read_packet()
            self._touch()
            if ptype == wire.PUBLISH:
                await self._on_publish(flags, body)
                continue
            wire.check_flags(ptype, flags)
            if ptype == wire.PUBACK:
                self.session.inflight_out.pop(wire.parse_packet_id(body), None)  # type: ignore[union-attr]
            elif ptype == wire.PINGREQ:
                self._write(wire.PINGRESP_BYTES)
            elif ptype == wire.SUBSCRIBE:
                await self._on_subscribe(flags, body)
            elif ptype == wire.UNSUBSCRIBE:
                await self._on_unsubscribe(flags, body)
            elif ptype == wire.PUBREL:
                packet_id = wire.parse_packet_id(body)
                if self.qos2_in is not None:
                    self.qos2_in.discard(packet_id)
                self._write(wire.ack(wire.PUBCOMP, packet_id))
            elif ptype == wire.DISCONNECT:
                if body:
                    raise wire.MalformedPacket("DISCONNECT with a body")
                self.clean_exit = True  # [MQTT-3.14.4-3]: discard the will
                return
            else:  # CONNECT again [MQTT-3.1.0-2], PUBREC/PUBCOMP for QoS 2 we never send
                raise wire.MalformedPacket(f"unexpected packet type {ptype}")

    async def _on_publish(self, flags: int, body: bytes) -> None:
        core = self.core
        session = self.session
        device_id = self.device_id
        assert session is not None and device_id is not None
        message = wire.parse_publish(flags, body)
        if not rules.valid_topic_name(message.topic):
            raise wire.MalformedPacket(f"invalid topic name {message.topic[:80]!r}")  # [MQTT-3.3.2-2]
        if not await core._topic_filtering(session, message.topic, Action.PUBLISH):
            core.stats.inc("publish_refused")
            log.warning(
                "mqtt %s (%s): PUBLISH to %r refused (outside devices/%s/), connection closed",
                device_id,
                self.peer,
                message.topic[:200],
                device_id,
            )
            raise handshake.Refused
        packet_id = message.packet_id or 0
        if message.qos == 2:
            if self.qos2_in is None:
                self.qos2_in = set()
            if packet_id in self.qos2_in:  # a resend before PUBREL: already taken [MQTT-4.3.3]
                self._write(wire.ack(wire.PUBREC, packet_id))
                return
        pending = core.ingest(device_id, message.topic, message.payload)  # raises: no acknowledgement
        ack: bytes | None = None
        if message.qos == 1:
            ack = wire.ack(wire.PUBACK, packet_id)
        elif message.qos == 2 and self.qos2_in is not None:
            self.qos2_in.add(packet_id)
            ack = wire.ack(wire.PUBREC, packet_id)
        if ack is not None:
            if pending is None:
                self._write(ack)
            else:  # acknowledged once durable; the connection reads on meanwhile, acks stay in order
                pending.add_done_callback(partial(self._ack_when_durable, ack))
        if core.has_subscribers(message.topic):
            await core._broadcast_message(session, message.topic, message.payload, message.qos)

    async def _on_subscribe(self, flags: int, body: bytes) -> None:
        core = self.core
        try:
            packet = await SubscribePacket.from_stream(
                BufferReader(body), fixed_header=MQTTFixedHeader(wire.SUBSCRIBE, flags, len(body))
            )
        except (AMQTTError, MQTTError, NoDataError, ValueError, IndexError) as exc:
            raise wire.MalformedPacket(f"SUBSCRIBE: {exc}") from exc
        topics = packet.payload.topics
        if not topics or any(qos > 2 for _, qos in topics):
            raise wire.MalformedPacket("SUBSCRIBE without topics or with QoS 3")  # [MQTT-3.8.3-3/4]
        codes = []
        for topic_filter, qos in topics:
            code = await core.add_subscription((topic_filter, min(qos, 1)), self.session)
            if code == SUBACK_FAILURE:
                core.stats.inc("subscribe_refused")
                log.warning(
                    "mqtt %s (%s): SUBSCRIBE to %r refused", self.device_id, self.peer, topic_filter[:200]
                )
            codes.append(code)
        self._write(SubackPacket.build(packet.variable_header.packet_id, codes).to_bytes())

    async def _on_unsubscribe(self, flags: int, body: bytes) -> None:
        try:
            packet = await UnsubscribePacket.from_stream(
                BufferReader(body), fixed_header=MQTTFixedHeader(wire.UNSUBSCRIBE, flags, len(body))
            )
        except (AMQTTError, MQTTError, NoDataError, ValueError, IndexError) as exc:
            raise wire.MalformedPacket(f"UNSUBSCRIBE: {exc}") from exc
        for topic_filter in packet.payload.topics:
            self.core._del_subscription(topic_filter, self.session)
        self._write(UnsubackPacket.build(packet.variable_header.packet_id).to_bytes())

    # -- the end -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        core = self.core
        core.live.discard(self)
        core.pending.pop(self, None)
        session, key, device_id = self.session, self.key, self.device_id
        if session is None or key is None or device_id is None:
            return
        if self.counted:
            core.authenticated -= 1
            left = core.device_conns.get(device_id, 1) - 1
            if left > 0:
                core.device_conns[device_id] = left
            else:
                core.device_conns.pop(device_id, None)
        entry = core._sessions.get(key)
        if entry is None or entry[1] is not self:
            return  # taken over or deleted: the session is someone else's now
        if not self.clean_exit and session.will_flag and session.will_topic:
            # the network connection closed without DISCONNECT: publish the will [MQTT-3.1.2-8]
            try:
                core.ingest(device_id, session.will_topic, bytes(session.will_message or b""))
                if core.has_subscribers(session.will_topic):
                    await core._broadcast_message(
                        session, session.will_topic, session.will_message, session.will_qos
                    )
            except Exception:
                log.exception("mqtt %s: will message not delivered", device_id)
        session.disconnect()
        if session.clean_session:
            core._sessions.pop(key, None)
            await core._del_all_subscriptions(session)
        else:
            core._sessions[key] = (session, None)  # offline: keep the session, not this object
