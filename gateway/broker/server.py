"""The embedded MQTT broker: amqtt in the gateway's own event loop, with the site's bounds.

What we add around amqtt 0.12 (through its documented extension points where it has them):

* identity and topics: only our two plugins (:mod:`gateway.broker.plugins`), no anonymous plugin;
* a maximum packet size enforced before a PUBLISH payload is buffered: :class:`FramingGuard`
  cuts the connection as soon as a longer packet is announced;
* a maximum number of connections that *refuses* the extra ones (amqtt's own limit queues them);
* offline queues (persistent sessions, QoS 1) bounded to ``mqtt.max_queued_messages``, oldest first
  out;
* ingest: ``devices/{id}/metrics`` and ``devices/{id}/events`` are handed to the gateway's hook in
  process (no loopback subscriber), *before* the PUBACK goes out, so a message acknowledged to a
  device is already durable in the outbox; they are not re-broadcast: they are for the gateway only.
* a client that sends something amqtt cannot handle is disconnected; the broker stays up.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import gc
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker as AmqttBroker
from amqtt.broker import RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.session import Session

from gateway.access import peer_cn
from gateway.broker.plugins import PEER_CN, Authenticate, Hooks, topic_allowed
from gateway.errors import ConfigError
from gateway.settings import MqttSettings, parse_hostport

log = logging.getLogger(__name__)
T = TypeVar("T")

INGEST_KINDS = frozenset({"metrics", "events"})
OnPublish = Callable[[str, str, bytes], Awaitable[None]]


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: hand freed heap back to the system (a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None


TRIM_AFTER_CLOSED = 1000  # after this many connections closed, give their memory back


class PacketTooLarge(Exception):
    """Raised inside amqtt's reader: its reader loop treats it as fatal for that connection only."""


class FramingGuard(StreamReaderAdapter):
    """Follows MQTT framing over the bytes amqtt reads, and cuts a packet that is too long.

    A packet is one byte of type and flags, a remaining length of one to four bytes (MQTT 3.1.1
    section 2.2.3), then that many bytes. The guard decodes each remaining length as it goes by and
    raises :class:`PacketTooLarge` the moment one above ``max_packet_bytes`` (or a fifth length
    byte) is announced, before amqtt asks for the body; any single read above the limit is refused
    too. amqtt treats the exception as fatal for that connection only.
    """

    def __init__(self, reader: asyncio.StreamReader, max_packet_bytes: int) -> None:
        super().__init__(reader)
        self.max_packet_bytes = max_packet_bytes
        self._in_length = False
        self._length = 0
        self._multiplier = 1
        self._left = 0  # body bytes of the current packet not yet read

    async def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.max_packet_bytes:
            raise PacketTooLarge(
                f"a read of {n} bytes exceeds mqtt.max_packet_bytes ({self.max_packet_bytes})"
            )
        data = await super().read(n)
        self._observe(data)
        return data

    def _observe(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self._left > 0:
                take = min(self._left, len(data) - i)
                self._left -= take
                i += take
                continue
            b = data[i]
            i += 1
            if not self._in_length:  # the type byte of a new packet
                self._in_length, self._length, self._multiplier = True, 0, 1
                continue
            self._length += (b & 0x7F) * self._multiplier
            if b & 0x80:
                self._multiplier *= 128
                if self._multiplier > 128**3:
                    raise PacketTooLarge("malformed remaining length (a fifth length byte)")
                continue
            if self._length > self.max_packet_bytes:
                raise PacketTooLarge(
                    f"packet of {self._length} bytes announced; mqtt.max_packet_bytes is {self.max_packet_bytes}"
                )
            self._in_length, self._left = False, self._length


class SessionStates:
    """A light stand-in for the per-session ``transitions.Machine`` amqtt builds (about 15 KB each,
    a third of an idle connection's memory): the same triggers and queries amqtt uses on a
    session (``connect``, ``disconnect``, ``is_connected``, ``state``), with the same callbacks."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session, state: str) -> None:
        self._session = session
        self.state = state

    def connect(self) -> None:
        if self.state not in ("new", "disconnected"):
            raise ValueError(f"cannot connect a session in state {self.state!r}")  # amqtt catches ValueError
        self.state = "connected"
        self._session._on_enter_connected()

    def disconnect(self) -> None:
        self.state = "disconnected"
        self._session._on_enter_disconnected()

    def is_connected(self) -> bool:
        return self.state == "connected"


class SlimQueue(Generic[T]):
    """The part of ``asyncio.Queue`` amqtt uses on its per-connection queues, without the cost.

    An ``asyncio.Queue`` allocates three deques and an ``Event`` (another deque) up front, about
    2 KB, and amqtt keeps several per connection that stay empty for the life of an idle device.
    This one holds nothing until something is queued, and drops its storage when emptied.
    Unbounded like the queues it replaces (the broker bounds offline queues itself).
    """

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: collections.deque[T] | None = None
        self._waiters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def watch(self, waker: asyncio.Future[None]) -> None:
        """Wake ``waker`` on the next put (the broker's single-waiter loop watches several queues)."""
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waker)

    def unwatch(self, waker: asyncio.Future[None]) -> None:
        if self._waiters and waker in self._waiters:
            self._waiters.remove(waker)
            if not self._waiters:
                self._waiters = None

    async def get(self) -> T:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return self.get_nowait()


def _slim(owner: Any, *names: str) -> None:
    for name in names:
        queue = getattr(owner, name, None)
        if isinstance(queue, asyncio.Queue) and queue.empty() and not getattr(queue, "_getters", None):
            setattr(owner, name, SlimQueue())


def _lighten(session: Session) -> None:
    if not isinstance(session.transitions, SessionStates):
        session.transitions = SessionStates(session, session.transitions.state)
    _slim(session, "retained_messages", "delivered_message_queue")


class Broker(AmqttBroker):
    def __init__(
        self,
        settings: MqttSettings,
        *,
        authenticate: Authenticate,
        on_publish: OnPublish,
        count: Callable[[str], None] = lambda name: None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        hooks = Hooks(authenticate=authenticate, count=count)
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": None}}
        if settings.listen:
            listeners["plain"] = {"type": "tcp", "bind": settings.listen}
        super().__init__(
            {
                "listeners": listeners,
                "plugins": {
                    "gateway.broker.plugins.DeviceAuthPlugin": {"hooks": hooks},
                    "gateway.broker.plugins.DeviceTopicPlugin": {
                        "hooks": hooks,
                        "lab_mode": settings.lab_mode,
                    },
                },
            },
            plugin_namespace="gateway.broker",
        )
        self.settings = settings
        self.on_publish = on_publish
        self.count = count
        self.tls = tls
        self.active = 0
        self._closed_since_trim = 0
        self._trim = _malloc_trim()
        self._tls_server: asyncio.Server | None = None
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as exc:
            raise ConfigError("configuration", "mqtt.listen", f"a free address ({exc})") from exc
        for server in self._servers.values():
            for sock in getattr(server.instance, "sockets", None) or ():
                self.addresses.append(sock.getsockname()[:2])
        if self.settings.tls_listen and self.tls is not None:
            host, port = parse_hostport(self.settings.tls_listen)
            self._tls_server = await asyncio.start_server(
                partial(self.stream_connected, listener_name="plain"),
                host,
                port,
                ssl=self.tls,
                reuse_address=True,
            )
            self.addresses += [s.getsockname()[:2] for s in self._tls_server.sockets]

    async def stop(self) -> None:
        if self._tls_server is not None:
            self._tls_server.close()
        await self.shutdown()

    # -- connections ------------------------------------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        if self.active >= self.settings.max_connections:
            self.count("mqtt.refused_max_connections")
            writer.close()
            return
        self.active += 1
        PEER_CN.set(_peer_cn(writer))
        try:
            await self._client_connected(
                listener_name,
                FramingGuard(reader, self.settings.max_packet_bytes),
                StreamWriterAdapter(writer),
            )
        except PacketTooLarge as exc:
            self.count("mqtt.dropped_malformed")
            log.warning("MQTT client dropped before CONNECT completed: %s", exc)
        except Exception as exc:  # whatever a client sends, the broker stays up
            self.count("mqtt.dropped_malformed")
            log.warning("MQTT client dropped: %r", exc)
        finally:
            self.active -= 1
            writer.close()
            self._closed_since_trim += 1
            if self._closed_since_trim >= TRIM_AFTER_CLOSED and self.active < self._closed_since_trim:
                # After a reconnect storm or a mass disconnect, memory the sessions held goes back to
                # the system instead of staying in the allocator's free lists.
                self._closed_since_trim = 0
                asyncio.get_running_loop().call_later(1.0, self._give_back)

    # -- messages -----------------------------------------------------------------------------------

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        _lighten(client_session)
        _slim(handler, "_pending_subscriptions", "_pending_unsubscriptions")
        # Ingest before acknowledging: wrap this connection's PUBLISH handling (amqtt sends the
        # PUBACK inside handle_publish, after queueing the message for delivery).
        original = handler.handle_publish

        async def handle_publish(packet: Any) -> None:
            topic = packet.topic_name
            device = client_session.username or (client_session.client_id if self.settings.lab_mode else None)
            kind = _ingest_kind(topic)
            if kind is not None and device and topic_allowed(device, topic, Action.PUBLISH):
                self.count(f"mqtt.ingest_{kind}")
                try:
                    await self.on_publish(device, topic, bytes(packet.data or b""))
                except Exception:
                    log.exception("ingest failed for %s; the message is not acknowledged", topic)
                    raise
            await original(packet)

        handler.handle_publish = handle_publish
        await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        """amqtt's per-connection loop, with one waiter instead of four tasks.

        amqtt keeps four tasks alive per idle connection (disconnect, subscribe, unsubscribe and
        delivery waiters) and builds an ``asyncio.wait`` per message. Here the connection's queues
        (:class:`SlimQueue`) and its disconnect future wake one plain future; the work itself is
        done by amqtt's own handlers, in the same order of checks.
        """
        subs = getattr(handler, "_pending_subscriptions", None)
        unsubs = getattr(handler, "_pending_unsubscriptions", None)
        delivered = client_session.delivered_message_queue
        disconnect = getattr(handler, "_disconnect_waiter", None)
        if not (
            isinstance(subs, SlimQueue)
            and isinstance(unsubs, SlimQueue)
            and isinstance(delivered, SlimQueue)
            and isinstance(disconnect, asyncio.Future)
        ):
            await super()._client_message_loop(client_session, handler)
            return
        loop = asyncio.get_running_loop()

        def done(value: Any) -> asyncio.Future[Any]:
            f: asyncio.Future[Any] = loop.create_future()
            f.set_result(value)
            return f

        while True:
            if disconnect.done():
                await self._handle_disconnect(client_session, handler, disconnect)
                return
            busy = False
            while not subs.empty():
                await self._handle_subscription(client_session, handler, done(subs.get_nowait()))
                busy = True
            while not unsubs.empty():
                await self._handle_unsubscription(client_session, handler, done(unsubs.get_nowait()))
                busy = True
            while not delivered.empty() and not disconnect.done():
                message = delivered.get_nowait()
                busy = True
                if self._ingested(client_session, message):
                    continue  # handled before its PUBACK; for the gateway only, nothing to fan out
                if not await self._handle_message_delivery(client_session, handler, done(message)):
                    return
            if busy:
                continue
            waker: asyncio.Future[None] = loop.create_future()

            def wake(_: object, waker: asyncio.Future[None] = waker) -> None:
                if not waker.done():
                    waker.set_result(None)

            for q in (subs, unsubs, delivered):
                q.watch(waker)
            disconnect.add_done_callback(wake)
            try:
                await waker
            except asyncio.CancelledError:
                return
            finally:
                for q in (subs, unsubs, delivered):
                    q.unwatch(waker)
                disconnect.remove_done_callback(wake)

    def _ingested(self, session: Session, message: Any) -> bool:
        """The same test the pre-PUBACK hook applied: an allowed ingest topic of this device."""
        topic = getattr(message, "topic", None)
        device = session.username or (session.client_id if self.settings.lab_mode else None)
        return (
            _ingest_kind(topic) is not None and bool(device) and topic_allowed(device, topic, Action.PUBLISH)
        )

    def create_offline_session(self, client_id: str) -> tuple[Any, Session]:
        handler, session = super().create_offline_session(client_id)
        _lighten(session)
        return handler, session

    def _give_back(self) -> None:
        gc.collect()
        self._trim()

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        if session is not None and _ingest_kind(topic) is not None:
            return  # already ingested before the PUBACK; for the gateway only, never fanned out
        await super()._broadcast_message(session, topic, data, force_qos)

    async def _retain_broadcast_message(
        self, broadcast: dict[str, Any], qos: int, target_session: Session
    ) -> None:
        queue = target_session.retained_messages
        while queue.qsize() >= self.settings.max_queued_messages:
            queue.get_nowait()  # bounded: the oldest goes first
            self.count("mqtt.offline_dropped")
        queue.put_nowait(
            RetainedApplicationMessage(broadcast["session"], broadcast["topic"], broadcast["data"], qos)
        )

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """The gateway telling devices something (``devices/{id}/updates``)."""
        await self.internal_message_broadcast(topic, payload, qos)

    def connected(self, device_id: str) -> bool:
        for session, _handler in self._sessions.values():
            if session.username == device_id and session.transitions.state == "connected":
                return True
        return False

    def stats(self) -> dict[str, int]:
        return {"connections": self.active, "sessions": len(self._sessions)}


def _ingest_kind(topic: str | None) -> str | None:
    if not topic:
        return None
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "devices" and parts[2] in INGEST_KINDS:
        return parts[2]
    return None


def _peer_cn(writer: asyncio.StreamWriter) -> str | None:
    return peer_cn(writer.get_extra_info("ssl_object"))
