"""The site's own MQTT broker as the gateway's metrics source (``mqtt.mode = "external"``).

A large site already runs a broker or a cluster (mosquitto, EMQX, HiveMQ) that holds its devices'
connections better than an embedded one. The gateway then connects to it as one MQTT 5 client
(``mqtt.external_url``) and:

- subscribes at QoS 1 to ``devices/+/metrics`` and ``devices/+/events``, as a shared subscription
  ``$share/{mqtt.external_shared_group}/...`` [MQTT 5, 4.8.2] when a group is set, so several
  gateways split the stream instead of each taking all of it. Plain by default: mosquitto 2.0
  restores a persistent session's plain subscriptions after a restart but not its shared ones, so
  messages published before we are back would find no subscriber (PUBACK reason 0x10) and be lost;
- holds a persistent session (clean start off, session expiry ``mqtt.session_expiry_s``), so what
  arrives while it is away waits for it in the broker;
- acknowledges a message only once it is durable in the outbox: the same ingest hook as the embedded
  broker (``Telemetry.mqtt_message``) returns a future that resolves when the outbox commit is on
  disk, and only then goes the PUBACK (paho's ``manual_ack``). Until then the broker holds the
  message in our session; after a crash or a lost connection it sends it again. Acknowledgements
  leave in the order the messages came [MQTT-4.6.0-2], and never for a message of an earlier
  connection (its packet id means nothing on this one: the broker re-sends it and we take it again);
- publishes ``devices/{id}/updates`` (rollback notices) there.

Who may publish where is then that broker's job: its ACLs give each device only its own topics
(the README shows the mosquitto pattern). The device id is read from the topic.

What it leaves to others: what a message means (``on_publish``), the broker's own durability
(mosquitto keeps queued messages across a restart only with ``persistence true``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway import mqtt_link
from gateway.broker import rules
from gateway.broker.amqtt_core import PublishHook
from gateway.core.errors import ConfigError
from gateway.core.settings import MqttSettings
from gateway.stats import Stats

log = logging.getLogger(__name__)

INGEST_KINDS = ("metrics", "events", "samples")
KEEPALIVE_S = 30
RECONNECT_MAX_S = 5  # paho's backoff cap: a restarted site broker is ours again within seconds


def topic_filters(shared_group: str) -> list[str]:
    plain = [f"devices/+/{kind}" for kind in INGEST_KINDS]
    return [f"$share/{shared_group}/{f}" for f in plain] if shared_group else plain


@dataclass
class _Held:
    """A message taken in and not acknowledged yet."""

    generation: int
    mid: int
    qos: int
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
        self._client: paho.Client | None = None
        self._bridge: mqtt_link.LoopBridge | None = None
        self._held: deque[_Held] = deque()
        self._generation = 0
        self._up = False
        self.ready = asyncio.Event()  # subscribed on the current connection (tests, status)

    async def start(self) -> None:
        """Connects in the background: a site broker that is down at start-up is retried (paho's
        backoff, 1 to 5 s) and logged, not a reason to stop the gateway."""
        if self.endpoint.tls:
            try:
                self.tls.context()
            except (OSError, ValueError) as exc:
                raise ConfigError("configuration", "mqtt.external_ca", f"readable PEM files ({exc})") from exc
        client = mqtt_link.make_client(
            self.endpoint, self.client_id, self.tls, v5=True, manual_ack=True, reconnect=True
        )
        client.reconnect_delay_set(1, RECONNECT_MAX_S)
        self._bridge = mqtt_link.LoopBridge(
            client,
            asyncio.get_running_loop(),
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            on_message=self._message,
        )
        props = mqtt_link.connect_properties(
            self.settings.session_expiry_s, self.settings.external_receive_max
        )
        client.connect_async(
            self.endpoint.host, self.endpoint.port, KEEPALIVE_S, clean_start=False, properties=props
        )
        client.loop_start()
        self._client = client
        log.info(
            "mqtt: using the site broker %s:%d as %r", self.endpoint.host, self.endpoint.port, self.client_id
        )

    async def stop(self) -> None:
        """Unacknowledged messages stay in the broker's session: they come again next time."""
        client, self._client = self._client, None
        if client is None:
            return
        self._up = False
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._held.clear()

    # -- paho's events, on the loop ----------------------------------------------------------------

    def _connected(self, generation: int, session_present: bool, reason: ReasonCode) -> None:
        if reason.is_failure:
            self._stats.inc("connect_refused")
            log.error("mqtt: the site broker refused us: %s (check mqtt.external_url)", reason)
            return
        self._generation = generation
        self._up = True
        self._held.clear()  # their packet ids belonged to the last connection
        self._stats.inc("connects")
        log.info("mqtt: connected to the site broker (session present: %s)", session_present)
        client = self._client
        if client is None:
            return
        options = SubscribeOptions(qos=1)
        client.subscribe([(f, options) for f in topic_filters(self.settings.external_shared_group)])
        self.ready.set()

    def _disconnected(self, reason: ReasonCode | int) -> None:
        if self._up:
            log.warning("mqtt: lost the site broker (%s); reconnecting", reason)
        self._up = False
        self.ready.clear()

    def _message(self, generation: int, message: paho.MQTTMessage) -> None:
        topic = message.topic
        device_id = rules.topic_device(topic)
        durable: asyncio.Future[Any] | None = None
        if device_id is None or topic.rsplit("/", 1)[-1] not in INGEST_KINDS:
            self._stats.inc("ignored")  # not ours to ingest: acknowledged, or it comes back forever
        else:
            try:
                durable = self._on_publish(device_id, topic, bytes(message.payload))
            except Exception:
                self._stats.inc("hook_errors")
                log.exception("mqtt %s: ingest failed for %r; not acknowledged", device_id, topic)
                return  # held by the broker in our session; it comes again after a reconnect
            self._stats.inc("published")
        if message.qos == 0:
            return
        held = _Held(generation, message.mid, message.qos, durable)
        self._held.append(held)
        if durable is None:
            self._release()
        else:
            durable.add_done_callback(lambda _f: self._release())

    def _release(self) -> None:
        """Acknowledge, in arrival order, every message at the head that is durable now."""
        client = self._client
        while self._held:
            head = self._held[0]
            if head.durable is not None and not head.durable.done():
                return
            self._held.popleft()
            failed = head.durable is not None and (head.durable.cancelled() or head.durable.exception())
            if failed:
                self._stats.inc("hook_errors")  # not durable: no PUBACK, the broker sends it again
                continue
            if client is not None and head.generation == self._generation and self._up:
                client.ack(head.mid, head.qos)
                self._stats.inc("acked")

    # -- the face the site loop and the status page use --------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if rules.topic_device(topic) is None or not rules.valid_topic_name(topic):
            raise ValueError(f"not a device topic: {topic!r}")
        if self._client is None:
            raise RuntimeError("not started")
        self._client.publish(topic, payload, qos)  # queued by paho while the broker is away
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
            )
        }
        out.update(self._stats.snapshot())
        out["mode"] = "external"
        out["external"] = f"{self.endpoint.host}:{self.endpoint.port}"
        out["connected"] = int(self._up)
        out["unacknowledged"] = len(self._held)
        return out
