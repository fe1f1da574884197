"""The embedded MQTT broker: amqtt 0.12 inside the gateway's own event loop.

    Broker(settings, authenticate, on_publish)    what the gateway starts, stops and asks
      └── AmqttCore (amqtt.broker.Broker)         sessions, subscriptions, plugins, broadcast
            ├── DeviceAuthPlugin, DeviceTopicPlugin   (gateway.broker.plugins; nothing else)
            └── Connection per client                 (gateway.broker.connection)

What we keep of amqtt: its listeners, its session table and subscription table, its plugin manager
(loaded with our two plugins only, never the anonymous one), its broadcast loop and session-expiry
monitor, its CONNECT/SUBSCRIBE codecs. What we replace, by subclassing, and why:

- the per-client protocol handler (``Connection``): bounded reads, one coroutine per client instead
  of six tasks, malformed input closes that client only;
- ``Session`` (``LeanSession``): no per-session state machine, bounded offline queue;
- ``_run_broadcast`` and ``_broadcast_message``: amqtt matches every message against every
  subscription in the broker (O(subscriptions) per message). A device may only subscribe inside
  its own subtree, so a message to ``devices/{id}/...`` can only match filters of device ``id``;
  we index filters by device and skip the broadcast queue when nobody can receive the message
  (the common case: metrics go to the in-process hook only);
- ``_topic_filtering``: the plugins are awaited in place rather than through one task per plugin
  per call;
- the broadcast queue is bounded: when full, publishers wait (TCP back-pressure), memory does not
  grow;
- the listeners: ``gateway.accept.Acceptor`` instead of ``asyncio.start_server``, so running out of
  descriptors pauses accepting (backed off, logged once per interval) instead of spinning.

Capacity (``mqtt.max_connections``) is for authenticated clients. A socket that has not sent a
whole CONNECT packet yet is *pending*: at most ``mqtt.max_pending_connections`` of them (TLS handshakes
included), each for at most ``mqtt.connect_timeout_s``; when a new socket arrives and the pending
ones are at their cap, the *oldest* pending one is dropped to make room. So sockets that connect and
never authenticate cannot lock devices out: a device's CONNECT, sent right after it connects, gets
in however many silent sockets are held open, unless new ones arrive faster than it can send it.

Persistent sessions (clean_session = 0) are capped per device (``mqtt.max_sessions_per_device``;
one device once opened 20,000 with different client ids and held 90 MB). A new one past the cap
drops that device's persistent session that has been offline longest: a device that changed its
client id (reflashed, random ids) must not be locked out for the session expiry (a week) by its own
abandoned sessions. Only when all of them are connected right now is the new one refused (CONNACK
0x02, identifier rejected): dropping a live one would let two clients of one device evict each
other in a loop.

Ingest: every accepted PUBLISH under ``devices/{id}/`` is handed to ``on_publish(device_id, topic,
payload)`` in the reading coroutine, before the PUBACK; if the hook raises, the client gets no
acknowledgement and is disconnected, so a QoS 1 message is redelivered rather than lost.
Retained PUBLISH from devices are delivered and handed over but not stored (no retained store).

What it leaves to others: which credentials are valid (``authenticate``), what a metrics message
means (the telemetry package, through ``on_publish``), mDNS advertisement.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError

from gateway.accept import Acceptor, bind_sockets
from gateway.broker import rules
from gateway.broker.connection import Connection
from gateway.broker.hub import MqttLimits
from gateway.broker.plugins import DEVICE_ID, AuthCheck
from gateway.core.errors import ConfigError
from gateway.core.settings import MqttSettings, Settings, parse_hostport
from gateway.stats import Stats
from gateway.tasks import TaskGroup

log = logging.getLogger(__name__)

# The hook may return a future: the message is then acknowledged only when it resolves (durable
# ingest before PUBACK without holding up the connection's next packets); None: acknowledge now.
PublishHook = Callable[[str, str, bytes], "asyncio.Future[Any] | None"]

BROADCAST_QUEUE_MAX = 1024  # messages waiting for fan-out; beyond it publishers wait
SWEEP_INTERVAL_S = 1.0  # how often keep-alive and CONNECT deadlines are checked
STOP_TIMEOUT_S = 5.0
LISTEN_BACKLOG = 1024  # a reconnect storm of thousands of devices should queue, not be refused


def mqtt_settings(settings: Settings) -> MqttSettings:
    """The ``[mqtt]`` section with the TLS files defaulted to ``[http]``'s, as the config documents."""
    m = settings.mqtt
    if m.tls_cert or m.tls_key:
        return m
    return replace(
        m,
        tls_cert=settings.http.tls_cert,
        tls_key=settings.http.tls_key,
        client_ca=m.client_ca or settings.http.client_ca,
    )


def amqtt_config(settings: MqttSettings, authenticate: AuthCheck) -> BrokerConfig:
    """amqtt 0.12's configuration: our listeners and exactly our two plugins.

    Giving ``plugins`` explicitly replaces amqtt's defaults, which include ``AnonymousAuthPlugin``
    (``allow_anonymous: true``) and the ``$SYS`` publisher; neither is loaded.
    """
    listeners: dict[str, ListenerConfig] = {
        "default": ListenerConfig(type=ListenerType.TCP, bind=_bind(settings.listen), max_connections=0)
    }
    if settings.tls_listen:
        for key in ("tls_cert", "tls_key", "client_ca"):
            path = getattr(settings, key)
            if path and not Path(path).is_file():
                raise ConfigError("configuration", f"mqtt.{key}", "an existing PEM file")
        if not (settings.tls_cert and settings.tls_key):
            raise ConfigError(
                "configuration", "mqtt.tls_listen", "mqtt.tls_cert and mqtt.tls_key (or http's) set"
            )
        listeners["tls"] = ListenerConfig(
            type=ListenerType.TCP,
            bind=_bind(settings.tls_listen),
            max_connections=0,
            ssl=True,
            certfile=settings.tls_cert,
            keyfile=settings.tls_key,
            cafile=settings.client_ca or None,
        )
    return BrokerConfig(
        listeners=listeners,
        plugins={
            "gateway.broker.plugins.DeviceAuthPlugin": {"check": authenticate, "lab_mode": settings.lab_mode},
            "gateway.broker.plugins.DeviceTopicPlugin": {},
        },
        session_expiry_interval=int(settings.session_expiry_s),
    )


def _bind(listen: str) -> str | None:
    if not listen:
        return None  # amqtt skips a listener without a bind address
    host, port = parse_hostport(listen)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AmqttCore(AmqttBroker):
    """amqtt's broker with our connection handling, session type, and device-indexed fan-out."""

    def __init__(
        self, config: BrokerConfig, limits: MqttLimits, on_publish: PublishHook, stats: Stats
    ) -> None:
        super().__init__(config)
        self.limits = limits
        self.on_publish = on_publish
        self.stats = stats
        self._broadcast_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=BROADCAST_QUEUE_MAX)
        self.live: set[Connection] = set()
        self.pending: dict[Connection, None] = {}  # no whole CONNECT packet yet, oldest first
        self.authenticated = 0
        self.device_conns: dict[str, int] = {}
        self.device_sessions: dict[str, dict[str, None]] = {}  # persistent session keys, oldest first
        self._acceptors: list[Acceptor] = []
        self.device_filters: dict[str, set[str]] = {}
        self.now = asyncio.get_running_loop().time
        self._topic_plugins = [p for p in self.plugins_manager.plugins if hasattr(p, "topic_filtering")]
        self._tasks = TaskGroup()
        self.ssl_handshake_timeout_s = limits.connect_timeout_s

    # -- listeners -------------------------------------------------------------------------------

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> asyncio.Server:
        if listener_type != ListenerType.TCP:
            raise BrokerError(f"listener type {listener_type} is not supported here")
        if address and address.startswith("["):
            address = address.strip("[]")
        connected = partial(self.stream_connected, listener_name=listener_name)

        def protocol() -> asyncio.StreamReaderProtocol:  # what asyncio.start_server would make
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(), connected)

        try:
            sockets = bind_sockets(address or "", port, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            raise BrokerError(f"cannot listen on {address}:{port}: {exc.strerror}") from exc
        acceptor = Acceptor(
            sockets,
            protocol,
            name=f"mqtt {listener_name}",
            admit=self.admit,
            ssl_context=ssl_context,
            ssl_handshake_timeout_s=self.ssl_handshake_timeout_s,
            count=lambda name: self.stats.inc(name.rpartition(".")[2]),
        )
        acceptor.start()
        self._acceptors.append(acceptor)
        return acceptor  # type: ignore[return-value]  # quacks like asyncio.Server for amqtt

    def admit(self) -> bool:
        """A socket was accepted: make room among the pending ones (the oldest goes), or refuse."""
        while (
            len(self.pending) + sum(a.connecting for a in self._acceptors)
            >= self.limits.max_pending_connections
        ):
            if self.pending:
                oldest = next(iter(self.pending))
                del self.pending[oldest]
                self.stats.inc("pending_dropped")
                oldest.abort("not authenticated, and a newer connection needs the room")
            elif not any(a.cancel_oldest() for a in self._acceptors):
                return False
            else:
                self.stats.inc("pending_dropped")
        return True

    def touch_session(self, device_id: str, key: str) -> None:
        """A persistent session was resumed: it is now the device's most recently used one."""
        keys = self.device_sessions.get(device_id)
        if keys is not None and keys.pop(key, 0) is None:
            keys[key] = None

    async def reserve_session(self, device_id: str, key: str) -> bool:
        """Room for a new persistent session ``key`` of ``device_id`` (see the module docstring)."""
        keys = self.device_sessions.setdefault(device_id, {})
        while True:
            for gone in [k for k in keys if (e := self._sessions.get(k)) is None or e[0].clean_session]:
                del keys[gone]  # expired, deleted or replaced by amqtt's own paths
            if len(keys) < self.limits.max_sessions_per_device:
                break
            offline = {k: e[0] for k in keys if (e := self._sessions[k])[1] is None}
            if not offline:
                return False
            # offline longest; among equal times (whole seconds) the least recently connected
            victim = min(offline, key=lambda k: offline[k].last_disconnect_time or 0)
            del keys[victim]
            await self._delete_session(victim)
            self.stats.inc("sessions_dropped")
            log.info("mqtt %s: persistent session %r dropped (offline longest; cap %d)",
                     device_id, victim, self.limits.max_sessions_per_device)  # fmt: skip
        keys[key] = None
        return True

    @staticmethod
    def _create_ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(listener["certfile"], listener["keyfile"])
        if listener.cafile:
            # mTLS: a verified client certificate names the device (its CN); devices without one
            # may still log in with their token over TLS.
            context.load_verify_locations(cafile=listener.cafile)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        connection = Connection(self, reader, writer)
        self.live.add(connection)
        self.pending[connection] = None
        await connection.run()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self._tasks.spawn(self._sweep(), name="mqtt-keepalive-sweeper")

    async def shutdown(self) -> None:
        await self._tasks.close()
        for acceptor in self._acceptors:
            acceptor.close()
        for connection in list(self.live):
            connection.abort("broker stopping")
        await super().shutdown()
        tasks = [c.task for c in self.live if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)

    async def _sweep(self) -> None:
        """Close connections past their CONNECT or keep-alive deadline [MQTT-3.1.2-24]."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)  # a periodic timer, not synchronisation
            now = self.now()
            for connection in [c for c in self.live if c.deadline < now]:
                self.stats.inc("timeouts")
                connection.abort("no packet within the keep-alive (or no CONNECT in time)")

    # -- ingest ----------------------------------------------------------------------------------

    def ingest(self, device_id: str, topic: str, payload: bytes) -> asyncio.Future[Any] | None:
        """Hand an accepted message to the gateway; a failing hook means no acknowledgement.
        A returned future means: acknowledge when it resolves (and never if it fails)."""
        try:
            pending = self.on_publish(device_id, topic, payload)
        except Exception:
            self.stats.inc("hook_errors")
            log.exception("mqtt %s: ingest hook failed for %r; not acknowledged", device_id, topic)
            raise
        self.stats.inc("published")
        return pending

    # -- topic rules, subscriptions, fan-out -----------------------------------------------------

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:
        for plugin in self._topic_plugins:
            if not await plugin.topic_filtering(session=session, topic=topic, action=action):
                return False
        return True

    async def add_subscription(self, subscription: tuple[str, int], session: Any) -> int:
        code = int(await super().add_subscription(subscription, session))
        device_id = rules.topic_device(subscription[0])
        if code != 0x80 and device_id is not None:
            self.device_filters.setdefault(device_id, set()).add(subscription[0])
        return code

    def _del_subscription(self, a_filter: str, session: Any) -> int:
        deleted = int(super()._del_subscription(a_filter, session))
        if not self._subscriptions.get(a_filter):
            self._subscriptions.pop(a_filter, None)
            device_id = rules.topic_device(a_filter)
            filters = self.device_filters.get(device_id) if device_id else None
            if filters is not None:
                filters.discard(a_filter)
                if not filters:
                    del self.device_filters[device_id]  # type: ignore[arg-type]
        return deleted

    async def _del_all_subscriptions(self, session: Any) -> None:
        device_id = session.attributes.get(DEVICE_ID)
        for a_filter in list(self.device_filters.get(device_id, ())):
            self._del_subscription(a_filter, session)

    def has_subscribers(self, topic: str) -> bool:
        filters = self.device_filters.get(rules.topic_device(topic) or "")
        return bool(filters) and any(self._matches(topic, f) for f in filters)  # type: ignore[union-attr]

    async def _broadcast_message(
        self, session: Any, topic: str | None, data: Any, force_qos: int | None = None
    ) -> None:
        if topic is None or not self.has_subscribers(topic):
            return
        await super()._broadcast_message(session, topic, data, force_qos)

    async def _run_broadcast(self, running_tasks: Any) -> None:
        broadcast = await self._broadcast_queue.get()
        topic: str = broadcast["topic"]
        data = bytes(broadcast["data"] or b"")
        pub_qos = broadcast.get("qos")
        for a_filter in list(self.device_filters.get(rules.topic_device(topic) or "", ())):
            if not self._matches(topic, a_filter):
                continue
            for target, sub_qos in list(self._subscriptions.get(a_filter, ())):
                qos = min(sub_qos, 1 if pub_qos is None else pub_qos, 1)  # [MQTT-3.8.4-6]
                if not await self._topic_filtering(target, topic, Action.RECEIVE):
                    continue
                handler = self._sessions.get(target.client_id, (None, None))[1]
                if target.transitions.state == "connected" and handler is not None:
                    handler.send_publish(topic, data, qos)
                elif (
                    not target.clean_session
                    and qos
                    # offline persistent session: keep it, bounded, oldest out first [MQTT-3.1.2-5]
                    and not target.retained_messages.put_nowait((topic, data, qos))
                ):
                    self.stats.inc("queue_dropped")


class Broker:
    """The gateway's MQTT broker.

    ``authenticate(device_id, password, cert_cn) -> bool`` decides whether a device may connect
    (device id = user name, or certificate CN under mTLS; password = the device token).
    ``on_publish(device_id, topic, payload)`` receives every accepted PUBLISH under
    ``devices/{device_id}/``, in the event loop, before it is acknowledged: it must not block.
    """

    def __init__(self, settings: MqttSettings, authenticate: AuthCheck, on_publish: PublishHook) -> None:
        self.settings = settings
        self._authenticate = authenticate
        self._on_publish = on_publish
        self._stats = Stats()
        self._core: AmqttCore | None = None
        self._config = amqtt_config(settings, authenticate)  # ConfigError now, not at start

    async def start(self) -> None:
        s = self.settings
        limits = MqttLimits.from_settings(s)
        core = AmqttCore(self._config, limits, self._on_publish, self._stats)
        try:
            await core.start()
        except BrokerError as exc:
            key = "mqtt.tls_listen" if "tls" in str(exc.__cause__ or exc) else "mqtt.listen"
            raise ConfigError(
                "configuration", key, f"an address and files the broker can use ({exc})"
            ) from exc
        self._core = core
        for name, address in self.addresses.items():
            log.info("mqtt: listening on %s (%s)", address, name)

    async def stop(self) -> None:
        core, self._core = self._core, None
        if core is not None:
            await core.shutdown()

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound (host, port) per listener: ``tcp`` and, when configured, ``tls``."""
        if self._core is None:
            return {}
        out = {}
        for name, server in self._core._servers.items():
            sockets = server.instance.sockets if server.instance is not None else ()
            if sockets:
                host, port = sockets[0].getsockname()[:2]
                out["tcp" if name == "default" else name] = (host, port)
        return out

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to devices subscribed to ``topic`` (e.g. ``devices/{id}/updates``); offline
        persistent sessions keep it (bounded). Returns once queued for fan-out."""
        if rules.topic_device(topic) is None or not rules.valid_topic_name(topic):
            raise ValueError(f"not a device topic: {topic!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos}")
        if self._core is None:
            raise RuntimeError("broker not started")
        await self._core.internal_message_broadcast(topic, payload, qos)

    def connected(self, device_id: str) -> bool:
        return self._core is not None and device_id in self._core.device_conns

    def stats(self) -> dict[str, int]:
        """Counters: connections (authenticated, now), pending (not yet, now), sessions (now, incl.
        offline persistent), accepted, refused (credentials), refused_full (max_connections, or
        pending sockets at their cap with none to drop), pending_dropped (oldest pending dropped
        for a newer one), sessions_dropped / sessions_refused (max_sessions_per_device),
        accept_errors (accept() failed, e.g. out of descriptors), malformed, oversized, timeouts,
        published (handed to on_publish), publish_refused, subscribe_refused, delivered,
        queue_dropped, slow_consumers, hook_errors."""
        out = {
            name: 0
            for name in (
                "accepted",
                "refused",
                "refused_full",
                "pending_dropped",
                "sessions_dropped",
                "sessions_refused",
                "accept_errors",
                "malformed",
                "oversized",
                "timeouts",
                "published",
                "publish_refused",
                "subscribe_refused",
                "delivered",
                "queue_dropped",
                "slow_consumers",
                "hook_errors",
            )
        }
        out.update(self._stats.snapshot())
        core = self._core
        out["connections"] = core.authenticated if core else 0
        out["pending"] = len(core.pending) if core else 0
        out["sessions"] = len(core._sessions) if core else 0
        return out
