"""How a device reports its model at work, and hears that it should poll now.

- :class:`MqttLink`: the reference path, ``devices/<id>/metrics`` at QoS 1 on the gateway's broker
  (a send counts once its PUBACK came: the gateway acknowledges only what is durable), and a
  subscription to ``devices/<id>/updates``, the gateway's "poll now" (after a halt:
  ``{"rollback": true, ...}``). paho runs its network loop in its own thread; answers come back to
  the event loop with ``call_soon_threadsafe``. paho reconnects by itself.
- :class:`HttpLink`: ``POST /devices/<id>/metrics``; any 2xx is a success (the gateway has answered
  204, and later 200 with a small JSON body).

A notice only makes the agent poll: the poll answer, not the notice's content, decides what it
installs (an MQTT message is not signed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import paho.mqtt.client as paho

from gateway.agent.poll import MAX_ERROR_TEXT
from gateway.core import jsondoc
from gateway.core.errors import FormatError

log = logging.getLogger(__name__)

PUBACK_TIMEOUT_S = 10.0


class MetricsLink(Protocol):
    async def start(self) -> None: ...
    async def send(self, doc: Mapping[str, Any]) -> bool: ...
    async def close(self) -> None: ...


class HttpLink:
    """Metrics over HTTP, in the agent's own session."""

    def __init__(
        self, session: aiohttp.ClientSession, service_url: str, device_id: str, headers: Mapping[str, str]
    ) -> None:
        self._session, self._headers = session, dict(headers)
        self._url = f"{service_url}/devices/{device_id}/metrics"

    async def start(self) -> None:
        return None

    async def send(self, doc: Mapping[str, Any]) -> bool:
        try:
            async with self._session.post(self._url, json=dict(doc), headers=self._headers) as r:
                await r.content.read(MAX_ERROR_TEXT)  # an answer is not needed; never read unbounded
                if 200 <= r.status < 300:
                    return True
                log.warning("metrics refused: HTTP %s", r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("metrics not sent: %s", exc)
        return False

    async def close(self) -> None:
        return None


class MqttLink:
    """Metrics over the gateway's broker, and its update notices."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        *,
        token: str | None,
        on_notice: Callable[[dict[str, Any]], None],
    ) -> None:
        self.device_id = device_id
        self._host, self._port = host, port
        self._on_notice = on_notice
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False)
        if token:
            self._client.username_pw_set(device_id, token)  # the gateway's token mode: user = device id
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._connected
        self._client.on_message = self._message
        self._client.on_publish = self._published
        self._client.on_disconnect = self._disconnected
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._early: set[int] = set()  # PUBACKs that came before publish() returned its mid
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    async def send(self, doc: Mapping[str, Any]) -> bool:
        if not self.connected or self._loop is None:
            return False
        fut: asyncio.Future[bool] = self._loop.create_future()
        info = self._client.publish(f"devices/{self.device_id}/metrics", json.dumps(dict(doc)), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                fut.set_result(True)
            else:
                self._pending[info.mid] = fut
        try:
            return await asyncio.wait_for(fut, PUBACK_TIMEOUT_S)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._pending.pop(info.mid, None)

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # -- paho's thread ------------------------------------------------------------------------------

    def _connected(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected = not reason.is_failure
        if reason.is_failure:
            log.warning("%s: MQTT connection refused: %s", self.device_id, reason)
            return
        client.subscribe(f"devices/{self.device_id}/updates", qos=1)

    def _disconnected(self, _c: paho.Client, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.connected = False

    def _message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            doc = jsondoc.loads(
                bytes(msg.payload)
            )  # bounded nesting: a deep payload cannot kill paho's thread
        except FormatError:
            doc = {}  # a notice's content is not needed: any message means "poll now"
        if self._loop is not None and isinstance(doc, dict):
            self._loop.call_soon_threadsafe(self._on_notice, doc)

    def _published(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                self._early.add(mid)
        if fut is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[bool]) -> None:
    if not fut.done():  # a send that timed out has given up on it
        fut.set_result(True)
