"""One device connection on the embedded broker: read, bound, check, hand over, acknowledge.

One ``asyncio.Protocol`` per connection replaces amqtt's per-client machinery (a handler, its
reader task, four waiter tasks and one task per packet): the loop hands it the bytes it read and
it takes every whole packet in them at once, with no task, coroutine or stream reader per
connection (idle, a connection is this object, its transport and its session). Only steps that
must wait (CONNECT's authentication and session lookup, SUBSCRIBE, UNSUBSCRIBE, fan-out to
subscribers, a topic name not yet checked on this connection) run as a short task; input that
arrives meanwhile waits behind it, in order, and past ``INPUT_PAUSE_BYTES`` the socket is not
read. amqtt's core keeps what is shared (sessions, subscriptions, the plugin chain, the broadcast
queue) and calls back through the handler interface it expects (``mqtt_publish``, ``stop``,
``handle_connection_closed``). CONNECT to CONNACK: :mod:`gateway.broker.handshake`.

Bounds, all enforced here (MQTT 3.1.1 references in brackets):
- a packet's remaining length is read from the fixed header and checked against
  ``max_packet_bytes`` *before* any of the body is buffered; beyond it the connection is dropped;
- anything that breaks the protocol (unknown or server-only packet types, reserved flags, bad
  UTF-8, QoS 3, a second CONNECT, a first packet that is not CONNECT) closes this connection only
  [MQTT-4.8.0-1];
- the keep-alive: no packet within 1.5 times the client's keep-alive, or no CONNECT within
  ``connect_timeout_s``, and the broker's sweeper closes the connection [MQTT-3.1.2-24];
- outgoing bytes: a client that does not read its acknowledgements and messages is dropped once
  its socket write buffer passes ``MAX_WRITE_BUFFER_BYTES``; nothing awaits a slow client;
- messages in flight to a client: at most ``max_queued_messages``, the oldest dropped first.

Durable before PUBACK: a message the ingest hook answers with a future (the outbox commit) is
acknowledged only once that future succeeds, in order, many in one write (:mod:`.acks`); if it
fails, the client gets no acknowledgement and is disconnected.

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
from collections.abc import Coroutine
from typing import Any

from amqtt.contexts import Action
from amqtt.session import OutgoingApplicationMessage

from gateway.broker import closing, handshake, rules, subscriptions, wire
from gateway.broker.acks import Acks
from gateway.broker.hub import Hub
from gateway.broker.session import LeanSession

log = logging.getLogger(__name__)

MAX_WRITE_BUFFER_BYTES = 1 << 20
INPUT_PAUSE_BYTES = 1 << 16  # input waiting behind a step: stop reading the socket past this
KEEPALIVE_GRACE = 1.5  # [MQTT-3.1.2-24]

Step = Coroutine[Any, Any, None]


class Connection(asyncio.Protocol):
    """One client's socket, from CONNECT to close. Also amqtt's "handler" for its session."""

    __slots__ = ("_acks", "_busy", "_input", "_lost", "_need", "_ok_topic", "_stopped", "clean_exit", "core",
                 "counted", "deadline", "device_id", "key", "qos2_in", "session", "task", "transport")  # fmt: skip

    def __init__(self, core: Hub) -> None:
        self.core = core
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.deadline = core.now() + core.limits.connect_timeout_s
        self.session: LeanSession | None = None
        self.device_id: str | None = None
        self.key: str | None = None
        self.qos2_in: set[int] | None = None
        self.clean_exit = False
        self.counted = False
        self.task: asyncio.Task[Any] | None = None  # the step running now, or the end
        self._input: bytearray | None = None  # bytes not taken yet (a partial packet, or behind a step)
        self._need = 0  # how many bytes ``_input`` must hold before a whole packet is there
        self._busy = False  # a step runs: input waits behind it
        self._stopped = False  # no more input is taken (refused, malformed, DISCONNECT, closed)
        self._lost = False  # the transport is closed
        self._acks: Acks | None = None  # acknowledgements waiting for durability, once any has
        self._ok_topic: str | None = None  # the last topic name the plugins let it publish to

    @property
    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    # -- the transport's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # keep-alive 0 means "no MQTT keep-alive": let TCP find the dead peers instead
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass  # the peer is gone already: connection_lost follows
        self.core.live.add(self)
        self.core.pending[self] = None

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        held = self._input
        if held is not None:
            held += data
            if self._busy or len(held) < self._need:
                if self._busy and len(held) > INPUT_PAUSE_BYTES:
                    self.transport.pause_reading()  # resumed when the step is done
                return
            data = bytes(held)
            self._input = None
        elif self._busy:
            self._input = bytearray(data)
            return
        self._take(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stopped = self._lost = True
        if not self._busy:
            self.task = asyncio.get_running_loop().create_task(self._finish(), name="mqtt close")

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
        self._stopped = True
        if not self.transport.is_closing():
            log.debug("mqtt %s (%s): closing: %s", self.device_id or "-", self.peer, reason)
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.core.stats.inc("slow_consumers")
            log.warning("mqtt %s (%s): not reading what we send, dropping it", self.device_id, self.peer)
            self.abort("slow consumer")

    def _ack(self, ack: bytes, durable: asyncio.Future[Any] | None) -> None:
        """Send ``ack`` once ``durable`` (if any) succeeds and every earlier one has gone."""
        if self._acks is None:
            if durable is None:
                self._write(ack)
                return
            self._acks = Acks(self._write, self._ingest_failed)
        self._acks.add(ack, durable)

    def _ingest_failed(self, durable: asyncio.Future[Any]) -> None:
        self.core.stats.inc("hook_errors")
        log.error(
            "mqtt %s: ingest failed (%r); not acknowledged, closing",
            self.device_id,
            durable.exception() if not durable.cancelled() else "cancelled",
        )
        self.abort("ingest failed")

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

    def _take(self, data: bytes) -> None:
        """Every whole packet in ``data``, in order, until one needs a step; the rest waits."""
        pos, end, taken = 0, len(data), False
        limit = self.core.limits.max_packet_bytes
        try:
            while pos < end and not self._stopped:
                header = wire.fixed_header(data, pos, limit)
                if header is None:
                    self._need = end - pos + 1
                    break
                start, length = header
                if start + length > end:
                    self._need = start + length - pos
                    break
                first = data[pos]
                pos = start + length
                taken = True
                if not self._packet(first >> 4, first & 0x0F, data[start:pos]):
                    break  # a step runs; it takes the rest when it is done
        except Exception as exc:
            self._failed(exc)
            return
        if taken:
            self._touch()
        if pos < end and not self._stopped:
            self._input = bytearray(data[pos:])

    def _touch(self) -> None:
        keep_alive = self.session.keep_alive if self.session is not None else 0
        if keep_alive:
            self.deadline = self.core.now() + keep_alive * KEEPALIVE_GRACE
        elif self.session is not None:
            self.deadline = float("inf")

    def _step(self, step: Step) -> bool:
        """Run ``step`` with the input held behind it; False (stop taking packets now)."""
        self._busy = True
        self.task = asyncio.get_running_loop().create_task(self._run_step(step), name="mqtt step")
        return False

    async def _run_step(self, step: Step) -> None:
        try:
            await step
        except asyncio.CancelledError:
            self.abort("broker stopping")
            raise
        except Exception as exc:
            self._failed(exc)
        finally:
            self._busy = False
        if self._lost:
            await self._finish()
            return
        self.task = None
        held, self._input = self._input, None
        if held is not None and not self._stopped:
            self._take(bytes(held))
        if not self._stopped and not self._busy:
            self.transport.resume_reading()

    def _failed(self, exc: BaseException) -> None:
        """Whatever a client sends, the broker stays up: this connection closes, nothing else."""
        closing.note_failure(self.core, exc, f"{self.device_id or '-'} ({self.peer})")
        self.abort("refused" if isinstance(exc, handshake.Refused) else "protocol error")

    def _packet(self, ptype: int, flags: int, body: bytes) -> bool:
        """Act on one packet; False when a step now runs (take no more packets until it is done)."""
        if self.session is None:
            # A whole first packet is in: no longer one of the pending sockets the newest may push
            # out (checking it is in-memory work; it ends in a CONNACK or a close right away).
            self.core.pending.pop(self, None)
            if ptype != wire.CONNECT:
                raise wire.MalformedPacket("first packet is not CONNECT")  # [MQTT-3.1.0-1]
            return self._step(self._handshake(flags, body))
        if ptype == wire.PUBLISH:
            return self._on_publish(flags, body)
        wire.check_flags(ptype, flags)
        if ptype == wire.PUBACK:
            self.session.acknowledged(wire.parse_packet_id(body))
        elif ptype == wire.PINGREQ:
            self._write(wire.PINGRESP_BYTES)
        elif ptype == wire.SUBSCRIBE:
            return self._step(self._on_subscribe(flags, body))
        elif ptype == wire.UNSUBSCRIBE:
            return self._step(self._on_unsubscribe(flags, body))
        elif ptype == wire.PUBREL:
            packet_id = wire.parse_packet_id(body)
            if self.qos2_in is not None:
                self.qos2_in.discard(packet_id)
            self._ack(wire.ack(wire.PUBCOMP, packet_id), None)
        elif ptype == wire.DISCONNECT:
            if body:
                raise wire.MalformedPacket("DISCONNECT with a body")
            self.clean_exit = True  # [MQTT-3.14.4-3]: discard the will
            self._stopped = True
            self.transport.close()
        else:  # CONNECT again [MQTT-3.1.0-2], PUBREC/PUBCOMP for QoS 2 we never send
            raise wire.MalformedPacket(f"unexpected packet type {ptype}")
        return True

    async def _handshake(self, flags: int, body: bytes) -> None:
        """CONNECT checked, authenticated and given its session; CONNACK out. A refusal raises
        (:class:`~gateway.broker.handshake.Refused` after its CONNACK, or a protocol error)."""
        core = self.core
        try:
            packet = await handshake.parse_connect(flags, body)
            handshake.check_connect(packet)
            session = handshake.new_session(
                packet,
                self.peer,
                self.transport.get_extra_info("ssl_object"),
                core.limits.max_queued_messages,
            )
            self.device_id = await handshake.authenticate(core, session, self.peer)
            self.key = rules.session_key(self.device_id, session.client_id or "")
            session = await handshake.find_session(core, session, self.device_id, self.key, self, self.peer)
        except handshake.Refused as refused:
            if refused.code is not None:
                self._write(handshake.connack(0, refused.code))
            raise
        self._accept(session)

    def _accept(self, session: LeanSession) -> None:
        assert self.device_id is not None and self.key is not None
        self.session = session
        self.counted = True
        present = handshake.register(self.core, self, session, self.device_id, self.key)
        self._write(handshake.connack(present, handshake.CONNACK_ACCEPTED))
        self._touch()
        self._redeliver(session)

    def _redeliver(self, session: LeanSession) -> None:
        """Unacknowledged messages again with DUP [MQTT-4.4.0-1], then what queued while offline."""
        for packet_id, message in session.unacknowledged():
            self._write(wire.encode_publish(message.topic, bytes(message.data), 1, packet_id, dup=True))
        outbox = session.retained_messages
        while not outbox.empty():
            topic, data, qos = outbox.get_nowait()
            self.send_publish(topic, data, qos)

    def _on_publish(self, flags: int, body: bytes) -> bool:
        message = wire.parse_publish(flags, body)
        if message.topic == self._ok_topic:  # checked on this connection already: no step
            fan_out = self._publish(message)
            return True if fan_out is None else self._step(fan_out)
        if not rules.valid_topic_name(message.topic):
            raise wire.MalformedPacket(f"invalid topic name {message.topic[:80]!r}")  # [MQTT-3.3.2-2]
        return self._step(self._check_publish(message))

    async def _check_publish(self, message: wire.Publish) -> None:
        """A topic name new on this connection: the topic plugins decide, then on as usual."""
        if not await self.core._topic_filtering(self.session, message.topic, Action.PUBLISH):
            self.core.stats.inc("publish_refused")
            log.warning(
                "mqtt %s (%s): PUBLISH to %r refused (outside devices/%s/), connection closed",
                self.device_id,
                self.peer,
                message.topic[:200],
                self.device_id,
            )
            raise handshake.Refused
        self._ok_topic = message.topic
        fan_out = self._publish(message)
        if fan_out is not None:
            await fan_out

    def _publish(self, message: wire.Publish) -> Step | None:
        """Hand over, acknowledge once durable; the fan-out to subscribers to await, if any."""
        core = self.core
        packet_id = message.packet_id or 0
        if message.qos == 2:
            if self.qos2_in is None:
                self.qos2_in = set()
            if packet_id in self.qos2_in:  # a resend before PUBREL: already taken [MQTT-4.3.3]
                self._ack(wire.ack(wire.PUBREC, packet_id), None)
                return None
        pending = core.ingest(self.device_id, message.topic, message.payload)  # type: ignore[arg-type]
        if message.qos == 1:  # acknowledged once durable; the connection reads on meanwhile
            self._ack(wire.ack(wire.PUBACK, packet_id), pending)
        elif message.qos == 2 and self.qos2_in is not None:
            self.qos2_in.add(packet_id)
            self._ack(wire.ack(wire.PUBREC, packet_id), pending)
        if not core.has_subscribers(message.topic):
            return None
        return core._broadcast_message(self.session, message.topic, message.payload, message.qos)

    async def _on_subscribe(self, flags: int, body: bytes) -> None:
        who = f"{self.device_id} ({self.peer})"
        self._write(await subscriptions.subscribe(self.core, self.session, flags, body, who))  # type: ignore[arg-type]

    async def _on_unsubscribe(self, flags: int, body: bytes) -> None:
        self._write(await subscriptions.unsubscribe(self.core, self.session, flags, body))  # type: ignore[arg-type]

    # -- the end -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        await closing.finish(self.core, self, self.session, self.key, self.device_id)
