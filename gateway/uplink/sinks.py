"""Where outbox records go: an HTTP ingest URL (one gzip batch per request) and/or a cloud MQTT broker.

Both deliver at least once; the cloud deduplicates by ``(site, seq)``. A sink raises
:class:`~gateway.core.errors.TransportError` for anything worth retrying (network, 408, 429, 5xx);
``retry_after_s`` on the error carries the server's ``Retry-After``. 401/403/404 and the like mean a
wrong URL or token: retried (nothing is dropped for a configuration mistake) and logged. Any other
4xx means the cloud refuses the batch's content for good: :class:`Rejected` (the forwarder logs and
counts it, and moves on so that one bad record cannot block the site's uplink forever).
"""

from __future__ import annotations

import gzip
import json
import logging
import ssl
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from amqtt.client import MQTTClient
from amqtt.mqtt.constants import QOS_1

from gateway.core.errors import TransportError
from gateway.uplink.outbox import Record

log = logging.getLogger(__name__)


# A wrong URL or token is the site's configuration, not the data: keep the records and retry
# (the log says what to fix). 408 and 429 are the server asking us to come back.
RETRY_4XX = frozenset({401, 403, 404, 405, 407, 408, 410, 421, 429})


class Rejected(Exception):
    """The cloud refused this batch permanently (a 4xx other than 408/429)."""


class Sink(Protocol):
    name: str

    async def deliver(self, records: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class HttpSink:
    """``POST`` of ``{"site": ..., "records": [...]}`` as gzip JSON, with ``Authorization: Bearer``."""

    def __init__(
        self, url: str, token: str, site: str, *, timeout_s: float = 30.0, ca_bundle: str = ""
    ) -> None:
        self.name = "http"
        self.url = url
        self.token = token
        self.site = site
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, records: Sequence[Record]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=True)
        body = gzip.compress(
            json.dumps(
                {"site": self.site, "records": [r.to_json() for r in records]}, separators=(",", ":")
            ).encode()
        )
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self._session.post(self.url, data=body, headers=headers, ssl=self.ssl) as r:
                text = (await r.text())[:200]
                if 200 <= r.status < 300:
                    return
                if r.status in RETRY_4XX or r.status >= 500:
                    err = TransportError(
                        f"ingest {self.url}: HTTP {r.status} {text}", status=r.status, url=self.url
                    )
                    err.retry_after_s = _retry_after(r.headers.get("Retry-After"))  # type: ignore[attr-defined]
                    raise err
                raise Rejected(f"ingest {self.url}: HTTP {r.status} {text}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"ingest {self.url}: {exc!r}", url=self.url) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class MqttBridge:
    """Each record published to ``sites/{site}/{kind}`` at QoS 1; delivered once the broker's PUBACK is in."""

    def __init__(self, url: str, site: str, *, ca_bundle: str = "") -> None:
        self.name = "mqtt"
        self.url = url
        self.site = site
        self.ca_bundle = ca_bundle or None
        self._client: MQTTClient | None = None
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("uplink.mqtt_url: expected mqtt://user:pass@host:port or mqtts://...")

    async def _connect(self) -> MQTTClient:
        client = MQTTClient(
            client_id=f"ota-gateway-{self.site}",
            config={"auto_reconnect": False, "keep_alive": 30, "plugins": {}},
        )
        try:
            await client.connect(self.url, cleansession=True, cafile=self.ca_bundle)
        except Exception as exc:
            raise TransportError(
                f"cloud broker {urlsplit(self.url).hostname}: {exc!r}", url=self.url
            ) from exc
        return client

    async def deliver(self, records: Sequence[Record]) -> None:
        if self._client is None:
            self._client = await self._connect()
        try:
            for r in records:
                payload = json.dumps({"site": self.site, **r.to_json()}, separators=(",", ":")).encode()
                await self._client.publish(f"sites/{self.site}/{r.kind}", payload, qos=QOS_1, ack_timeout=10)
        except Exception as exc:
            await self._drop()
            raise TransportError(f"cloud broker publish failed: {exc!r}", url=self.url) from exc

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:
                log.debug("disconnect from the cloud broker failed", exc_info=True)

    async def close(self) -> None:
        await self._drop()
