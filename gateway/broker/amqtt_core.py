"""amqtt's broker core, subclassed: our connections, the device-indexed fan-out, bounded queues, the
pending-socket and persistent-session caps (the why of each is in :mod:`gateway.broker.server`).
:class:`AmqttCore` implements :class:`~gateway.broker.hub.Hub`, all a connection sees of it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError

from gateway.broker import rules
from gateway.broker.connection import Connection
from gateway.broker.hub import MqttLimits
from gateway.broker.plugins import DEVICE_ID
from gateway.runtime.accept import Acceptor, bind_sockets
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import Supervise, TaskGroup

log = logging.getLogger("gateway.broker.server")

# The hook may return a future: the message is then acknowledged only when it resolves (durable
# ingest before PUBACK without holding up the connection's next packets); None: acknowledge now.
PublishHook = Callable[[str, str, bytes], "asyncio.Future[Any] | None"]

BROADCAST_QUEUE_MAX = 1024  # messages waiting for fan-out; beyond it publishers wait
SWEEP_INTERVAL_S = 1.0  # how often keep-alive and CONNECT deadlines are checked
STOP_TIMEOUT_S = 5.0
LISTEN_BACKLOG = 1024  # a reconnect storm of thousands of devices should queue, not be refused


class AmqttCore(AmqttBroker):
    """amqtt's broker with our connection handling, session type, and device-indexed fan-out."""

    def __init__(
        self,
        config: BrokerConfig,
        limits: MqttLimits,
        on_publish: PublishHook,
        stats: Stats,
        supervise: Supervise | None = None,
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
        self._supervise = supervise  # the keep-alive sweep runs under the gateway's supervisor
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
        try:
            sockets = bind_sockets(address or "", port, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            raise BrokerError(f"cannot listen on {address}:{port}: {exc.strerror}") from exc
        acceptor = Acceptor(
            sockets,
            partial(Connection, self),
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

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self._tasks.spawn_loop("mqtt-keepalive-sweep", self._sweep, self._supervise)

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
        if not self.device_filters:  # nobody subscribed to anything (asked once per message)
            return False
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
