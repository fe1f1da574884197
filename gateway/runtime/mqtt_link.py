"""An MQTT client connection to someone else's broker, reported into asyncio.

Two rooms talk to a broker they do not run: ``broker.external`` (the site's own broker as the metrics
source, ``mqtt.mode = "external"``, through gmqtt on the event loop itself) and
``uplink.sinks.MqttBridge`` (the cloud broker, through paho-mqtt 2.x). Both take the URL and TLS
files from here. The bridge also takes a configured paho client and paho's network thread
(``loop_start``) whose callbacks are handed to the event loop with ``call_soon_threadsafe``, so the
room's own code runs on the loop only. paho's ``publish`` is safe to call from the loop while its
thread runs (it queues under paho's own locks and wakes its thread).

What it leaves to its users: what to subscribe to, when to acknowledge, what a PUBACK means.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode


@dataclass(frozen=True)
class Endpoint:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (1883 / 8883 by default)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Raises ValueError for anything but an mqtt:// or mqtts:// URL with a host."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


@dataclass(frozen=True)
class Tls:
    """PEM files: the CA that signs the broker's certificate (empty: the system's), and an optional
    client certificate and key."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        return ctx


def make_client(
    endpoint: Endpoint,
    client_id: str,
    tls: Tls,
    *,
    v5: bool,
) -> paho.Client:
    """A paho client for ``endpoint``: credentials and TLS set, not connected yet."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(tls.context())
    client.max_queued_messages_set(0)  # our callers bound what they queue themselves
    return client


class LoopBridge:
    """paho's callbacks, run on ``loop`` instead of paho's thread. ``generation`` counts CONNACKs:
    a packet id from an earlier connection means nothing on the current one."""

    def __init__(
        self,
        client: paho.Client,
        loop: asyncio.AbstractEventLoop,
        *,
        on_connect: Callable[[int, bool, ReasonCode], None],
        on_disconnect: Callable[[ReasonCode | int], None],
        on_publish: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.loop = loop
        self.generation = 0
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_publish = on_publish
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        if on_publish is not None:
            client.on_publish = self._published

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: we are shutting down

    def _connected(self, _c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if not reason.is_failure:
            self.generation += 1
        self._call(self._on_connect, self.generation, bool(flags.session_present), reason)

    def _disconnected(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode | int, _p: Any) -> None:
        self._call(self._on_disconnect, reason)

    def _published(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        assert self._on_publish is not None
        self._call(self._on_publish, mid, int(reason.value) if isinstance(reason, ReasonCode) else 0)
