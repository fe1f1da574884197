"""The embedded MQTT broker: amqtt 0.12 inside the gateway's own event loop.

    Broker(settings, authenticate, on_publish)    what the gateway starts, stops and asks
      └── AmqttCore (amqtt.broker.Broker)         sessions, subscriptions, plugins, broadcast
            │                                         (gateway.broker.amqtt_core)
            ├── DeviceAuthPlugin, DeviceTopicPlugin   (gateway.broker.plugins; nothing else)
            └── Connection per client                 (gateway.broker.connection, .handshake)

What we keep of amqtt: its listeners, its session table and subscription table, its plugin manager
(loaded with our two plugins only, never the anonymous one), its broadcast loop and session-expiry
monitor, its CONNECT/SUBSCRIBE codecs. What we replace, by subclassing, and why:

- the per-client protocol handler (``Connection``): an ``asyncio.Protocol`` that takes whole
  packets from the bytes the loop read, with no task or stream reader per client (amqtt: six
  tasks), bounded reads, malformed input closes that client only;
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
- the listeners: ``gateway.runtime.accept.Acceptor`` instead of ``asyncio.start_server``, so running out of
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

import logging
from dataclasses import replace
from pathlib import Path

from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError

from gateway.broker import rules
from gateway.broker.amqtt_core import AmqttCore, PublishHook
from gateway.broker.hub import MqttLimits
from gateway.broker.plugins import AuthCheck
from gateway.core.errors import ConfigError
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import MqttSettings, Settings
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import Supervise

log = logging.getLogger(__name__)


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


class Broker:
    """The gateway's MQTT broker.

    ``authenticate(device_id, password, cert_cn) -> bool`` decides whether a device may connect
    (device id = user name, or certificate CN under mTLS; password = the device token).
    ``on_publish(device_id, topic, payload)`` receives every accepted PUBLISH under
    ``devices/{device_id}/``, in the event loop, before it is acknowledged: it must not block.
    """

    def __init__(
        self,
        settings: MqttSettings,
        authenticate: AuthCheck,
        on_publish: PublishHook,
        supervise: Supervise | None = None,
    ) -> None:
        self.settings = settings
        self._supervise = supervise
        self._authenticate = authenticate
        self._on_publish = on_publish
        self._stats = Stats()
        self._core: AmqttCore | None = None
        self._config = amqtt_config(settings, authenticate)  # ConfigError now, not at start

    async def start(self) -> None:
        s = self.settings
        limits = MqttLimits.from_settings(s)
        core = AmqttCore(self._config, limits, self._on_publish, self._stats, self._supervise)
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
