"""The site's own MQTT broker as the gateway's metrics source (``mqtt.mode = "external"``).

A large site already runs a broker or a cluster (mosquitto, EMQX, HiveMQ) that holds its devices'
connections better than an embedded one. The gateway then connects to it as one MQTT 5 client
(``mqtt.external_url``) through gmqtt, an asyncio-native client: the event loop reads its socket
in large chunks, so a busy stream costs no thread, no lock hand-over and no loop wake-up per
message (paho's network thread did, and the profile in issue 27 found half the gateway's CPU there).
It:

- subscribes at QoS 1 to ``devices/+/metrics`` and ``devices/+/events``, as a shared subscription
  ``$share/{mqtt.external_shared_group}/...`` [MQTT 5, 4.8.2] when a group is set, so several
  gateways split the stream instead of each taking all of it. Plain by default: mosquitto 2.0
  restores a persistent session's plain subscriptions after a restart but not its shared ones, so
  messages published before we are back would find no subscriber (PUBACK reason 0x10) and be lost;
- holds a persistent session (clean start off, session expiry ``mqtt.session_expiry_s``), so what
  arrives while it is away waits for it in the broker;
- acknowledges a message only once it is durable in the outbox: the same ingest hook as the embedded
  broker (``Telemetry.mqtt_message``) returns a future that resolves when the outbox commit is on
  disk, and only then goes the PUBACK. Until then the broker holds the message in our session;
  after a crash or a lost connection it sends it again. Acknowledgements leave in the order the
  messages came [MQTT-4.6.0-2], all those one grouped outbox commit made durable in one write, and
  never for a message of an earlier connection (its packet id means nothing on this one: the
  broker re-sends it and we take it again);
- publishes ``devices/{id}/updates`` (rollback notices) there.

Who may publish where is then that broker's job: its ACLs give each device only its own topics
(the README shows the mosquitto pattern). The device id is read from the topic.

What it leaves to others: what a message means (``on_publish``), the broker's own durability
(mosquitto keeps queued messages across a restart only with ``persistence true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTCommands, MQTTv50
from gmqtt.mqtt.package import CommandWithMidPacket

from gateway.broker import external_reader, rules
from gateway.broker.amqtt_core import PublishHook
from gateway.core.errors import ConfigError
from gateway.core.settings import MqttSettings
from gateway.runtime import mqtt_link
from gateway.runtime.stats import Stats

log = logging.getLogger(__name__)

INGEST_KINDS = ("metrics", "events", "samples")
KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 5  # a restarted site broker is ours again within seconds


def topic_filters(shared_group: str) -> list[str]:
    plain = [f"devices/+/{kind}" for kind in INGEST_KINDS]
    return [f"$share/{shared_group}/{f}" for f in plain] if shared_group else plain


@functools.lru_cache(maxsize=1 << 16)  # three topics per device of a 20,000-device site, again and again
def ingest_device(topic: str) -> str | None:
    """The device a topic we ingest belongs to; None for any other topic."""
    device_id = rules.topic_device(topic)
    return device_id if device_id is not None and topic.rsplit("/", 1)[-1] in INGEST_KINDS else None


@dataclass(slots=True)
class _Held:
    """A QoS 1 message taken in and not acknowledged yet, and the connection it came on."""

    connection: Any
    mid: int
    durable: asyncio.Future[Any] | None


class ExternalBroker:
    """The same small face as the embedded :class:`~gateway.broker.server.Broker`: ``start``,
    ``stop``, ``publish``, ``connected``, ``addresses``, ``stats``."""

    def __init__(self, settings: MqttSettings, client_id: str, on_publish: PublishHook) -> None:
        self.settings = settings
        try:
            self.endpoint = mqtt_link.Endpoint.from_url(settings.external_url)
        except ValueError as exc:
            raise ConfigError(
                "configuration", "mqtt.external_url", "mqtt://user:password@host:port or mqtts://..."
            ) from exc
        self.client_id = settings.external_client_id or client_id
        self.tls = mqtt_link.Tls(settings.external_ca, settings.external_cert, settings.external_key)
        self._on_publish = on_publish
        self._stats = Stats()
        self._client: gmqtt.Client | None = None
        self._first: asyncio.Task[None] | None = None
        self._handler: Any = None  # gmqtt's packet handler: its current connection
        self._gmqtt_publish: Any = None  # gmqtt's own PUBLISH step, for what _publish_packet leaves
        self._context: ssl.SSLContext | bool = False
        self._held: deque[_Held] = deque()
        self._window = max(1, min(settings.external_receive_max, 65535))
        self._paused: Any = None  # the transport we stopped reading: the window is full
        self._generation = 0
        self._up = False
        self.ready = asyncio.Event()  # subscribed on the current connection (tests, status)

    async def start(self) -> None:
        """Connects in the background: a site broker that is down at start-up is retried (1 to 5 s
        apart) and logged, not a reason to stop the gateway."""
        context: ssl.SSLContext | bool = False
        if self.endpoint.tls:
            try:
                context = self.tls.context()
            except (OSError, ValueError) as exc:
                raise ConfigError("configuration", "mqtt.external_ca", f"readable PEM files ({exc})") from exc
        client = gmqtt.Client(
            self.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,  # and QoS 1 is ours anyway: see start()
            session_expiry_interval=min(int(self.settings.session_expiry_s), 0xFFFFFFFF),
            receive_maximum=self._window,
        )
        client.set_config({"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": RECONNECT_MIN_S})
        if self.endpoint.username is not None:
            client.set_auth_credentials(self.endpoint.username, self.endpoint.password)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        # gmqtt 0.8 has no manual acknowledgement: its own way (optimistic_acknowledgement off)
        # runs an async handler as a task per message and sends the PUBACK when it returns, and
        # the only way not to send one is an exception in its done-callback. So we take its QoS 1
        # step (a private method of its packet handler; gmqtt is pinned to 0.8.x and
        # tests/broker/test_external*.py fail if the seam moves) and send the PUBACKs, built by
        # gmqtt's own CommandWithMidPacket, on the connection the messages came on. Its PUBLISH
        # step is taken too, for the plain QoS 1 message only (_publish_packet), and from each
        # CONNACK on its packet reader (gateway.broker.external_reader).
        self._handler = client._package_handler
        self._handler._handle_qos_1_publish_packet = self._qos1
        self._gmqtt_publish = self._handler._handle_publish_packet
        self._handler._handle_publish_packet = self._publish_packet
        self._client = client
        self._context = context
        self._first = asyncio.create_task(self._connect_first(client, context))
        log.info(
            "mqtt: using the site broker %s:%d as %r", self.endpoint.host, self.endpoint.port, self.client_id
        )

    async def _connect_first(self, client: gmqtt.Client, context: ssl.SSLContext | bool) -> None:
        """Until a connection stands; gmqtt reconnects by itself after that, except after a refusal
        it deems permanent (a login refused): then this loop again, as at start-up."""
        delay = RECONNECT_MIN_S
        while True:
            try:
                await client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=context,
                    keepalive=KEEPALIVE_S,
                    version=MQTTv50,
                )
                return
            except (TimeoutError, OSError, gmqtt.MQTTConnectError) as exc:
                self._stats.inc("connect_refused")
                log.error("mqtt: cannot reach the site broker: %s (check mqtt.external_url); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def _retry_later(self, client: gmqtt.Client) -> None:
        await asyncio.sleep(RECONNECT_MAX_S)
        await self._connect_first(client, self._context)

    async def stop(self) -> None:
        """Unacknowledged messages stay in the broker's session: they come again next time."""
        client, self._client = self._client, None
        if client is None:
            return
        self._up = False
        self._drop_held()
        if self._first is not None:
            self._first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._first
        with contextlib.suppress(Exception):
            await client.disconnect()

    # -- gmqtt's events, on the loop ---------------------------------------------------------------

    def _connected(self, client: gmqtt.Client, session_present: int, result: int, _props: Any) -> None:
        if result != 0:
            self._stats.inc("connect_refused")
            log.error("mqtt: the site broker refused us: 0x%02x (check mqtt.external_url)", result)
            return
        self._generation += 1
        self._up = True
        self._drop_held()  # their packet ids belonged to the last connection
        external_reader.install(self._handler, self._take)
        self._stats.inc("connects")
        log.info("mqtt: connected to the site broker (session present: %s)", bool(session_present))
        if client.subscriptions:
            for sub in list(client.subscriptions):
                client.resubscribe(sub)
        else:
            filters = topic_filters(self.settings.external_shared_group)
            client.subscribe([gmqtt.Subscription(f, qos=1) for f in filters])
        self.ready.set()

    def _disconnected(self, _client: gmqtt.Client, _packet: Any, _exc: Any = None) -> None:
        if self._up:
            log.warning("mqtt: lost the site broker; reconnecting")
        self._up = False
        self.ready.clear()
        self._drop_held()
        refused = self._handler is not None and self._handler._permanent_failure
        client = self._client
        if refused and client is not None and (self._first is None or self._first.done()):
            self._stats.inc("connect_refused")
            log.error("mqtt: the site broker refused our login; retrying (check mqtt.external_url)")
            self._first = asyncio.create_task(self._retry_later(client))

    def _message(self, _client: gmqtt.Client, topic: str, payload: bytes, _qos: int, _props: Any) -> None:
        """QoS 0 (QoS 1 comes to :meth:`_qos1`): taken in, nothing to acknowledge."""
        self._ingest(topic, payload)

    def _publish_packet(self, cmd: int, raw: bytes) -> None:
        """gmqtt's PUBLISH step, for what reaches it (packets before our reader took over, and
        those it leaves to gmqtt): the plain QoS 1 message is taken here too."""
        handler = self._handler
        if cmd & 0x06 == 0x02 and handler._connection_state.protocol_version == MQTTv50:
            plain = external_reader.plain_qos1(raw)
            if plain is not None:
                self._take(*plain, handler.current_connection)
                return
        self._gmqtt_publish(cmd, raw)

    def _qos1(self, mid: int, payload: bytes, topic: str, _props: Any) -> None:
        """In gmqtt's place for a QoS 1 PUBLISH it has read (one with properties)."""
        self._take(mid, payload, topic, self._handler.current_connection)

    def _take(self, mid: int, payload: bytes, topic: str, connection: Any) -> None:
        """A QoS 1 message: taken in and held, no PUBACK yet."""
        taken, durable = self._ingest(topic, payload)
        if not taken:
            return  # held by the broker in our session; it comes again after a reconnect
        held = self._held
        held.append(_Held(connection, mid, durable))
        if len(held) == 1:  # only the oldest is watched (:meth:`_release` watches the next)
            if durable is None:
                self._release()
            else:
                durable.add_done_callback(self._release)
        if len(held) >= self._window and connection is not None:
            # The broker should stop here (our Receive Maximum), but Debian's mosquitto 2.0.11
            # does not once acknowledgements flow: read no more until commits free half of it.
            if self._paused is None:
                self._stats.inc("window_full")
            self._paused = connection._transport
            self._paused.pause_reading()

    def _ingest(self, topic: str, payload: bytes) -> tuple[bool, asyncio.Future[Any] | None]:
        """(taken, the future of its outbox commit); not taken: the hook failed."""
        device_id = ingest_device(topic) if isinstance(topic, str) else None  # bytes: not UTF-8
        if device_id is None:
            self._stats.inc("ignored")  # not ours to ingest: acknowledged, or it comes back forever
            return True, None
        try:
            durable = self._on_publish(device_id, topic, bytes(payload))
        except Exception:
            self._stats.inc("hook_errors")
            log.exception("mqtt %s: ingest failed for %r; not acknowledged", device_id, topic)
            return False, None
        self._stats.inc("published")
        return True, durable

    def _release(self, _done: Any = None) -> None:
        """Acknowledge, in arrival order and in one write, every message at the head that is
        durable now and came on the current connection; then watch the oldest still waiting.

        Only the oldest waiting message's future has a callback (one loop callback per grouped
        commit, not one per message): by the time it runs, the commit that resolved it has
        resolved every other future of the batch too. A stale call (its message dropped at a
        reconnect) only acknowledges what is durable now."""
        current = self._handler.current_connection if self._handler is not None and self._up else None
        acks: list[bytes] = []
        while self._held:
            head = self._held[0]
            if head.durable is not None and not head.durable.done():
                head.durable.add_done_callback(self._release)
                break
            self._held.popleft()
            failed = head.durable is not None and (head.durable.cancelled() or head.durable.exception())
            if failed:
                self._stats.inc("hook_errors")  # not durable: no PUBACK, the broker sends it again
            elif head.connection is current and current is not None:
                acks.append(CommandWithMidPacket.build_package(MQTTCommands.PUBACK, head.mid, False))
            else:
                self._stats.inc("dropped_on_reconnect")
        if acks and current is not None:
            current.send_package(b"".join(acks))
            self._stats.inc("acked", len(acks))
        if self._paused is not None and len(self._held) <= self._window // 2:
            paused, self._paused = self._paused, None
            if not paused.is_closing():
                paused.resume_reading()

    def _drop_held(self) -> None:
        """Messages of a connection that is gone: never acknowledged on another one."""
        if self._held:
            self._stats.inc("dropped_on_reconnect", len(self._held))  # the broker sends them again
        self._held.clear()
        self._paused = None  # that connection's transport; a new one reads from the start

    # -- the face the site loop and the status page use --------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if rules.topic_device(topic) is None or not rules.valid_topic_name(topic):
            raise ValueError(f"not a device topic: {topic!r}")
        client = self._client
        if client is None:
            raise RuntimeError("not started")
        if self._generation == 0:  # never connected yet: nowhere to keep it (the device polls anyway)
            self._stats.inc("undelivered")
            log.warning("mqtt: the site broker was never reached; notice on %r not sent", topic)
            return
        client.publish(topic, payload, qos=qos)  # QoS 1 is kept by gmqtt and sent again on reconnect
        self._stats.inc("delivered")

    def connected(self, device_id: str) -> bool:
        """Only the site broker knows; it keeps a notice for a device's persistent session."""
        return self._client is not None

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return {}  # we listen on nothing: devices use the site broker

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            n: 0
            for n in (
                "connects",
                "connect_refused",
                "published",
                "acked",
                "ignored",
                "hook_errors",
                "delivered",
                "undelivered",
                "dropped_on_reconnect",
                "window_full",
            )
        }
        out.update(self._stats.snapshot())
        out["mode"] = "external"
        out["external"] = f"{self.endpoint.host}:{self.endpoint.port}"
        out["connected"] = int(self._up)
        out["unacknowledged"] = len(self._held)
        return out
