"""Where outbox records go: an HTTP ingest URL (one gzip batch per request) and/or a cloud MQTT broker.

Both deliver at least once; the cloud deduplicates by ``(site, seq)``. A sink raises
:class:`DeliveryError` for anything worth retrying (network, 408, 429, 5xx), its facts as typed
fields: ``status``, ``retry_after_s`` (the server's ``Retry-After``), ``delivered_seq`` (how far a
batch got through before the failure). 401/403/404 and the like mean a wrong URL or token: retried
(nothing is dropped for a configuration mistake) and logged. Any other 4xx means the cloud refuses
the batch's content for good: :class:`Rejected` (the forwarder splits the batch until the poison
record stands alone, logs and counts it, and moves on so that one bad record cannot block the
site's uplink forever).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from gateway.core.errors import TransportError
from gateway.runtime import mqtt_link
from gateway.uplink.outbox import Record

log = logging.getLogger(__name__)


# A wrong URL or token is the site's configuration, not the data: keep the records and retry
# (the log says what to fix). 408 and 429 are the server asking us to come back.
RETRY_4XX = frozenset({401, 403, 404, 405, 407, 408, 410, 421, 429})


class DeliveryError(TransportError):
    """A sink did not get (all of) a batch through: the forwarder retries the rest.

    ``retry_after_s``: the server's ``Retry-After`` where it sent one (the forwarder waits that
    long instead of its own backoff); ``delivered_seq``: the last record of the longest run from
    the start of the batch the cloud acknowledged (the forwarder moves the cursor that far), or
    None; ``status``: the HTTP status, where there was one."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        delivered_seq: int | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url)
        self.retry_after_s = retry_after_s
        self.delivered_seq = delivered_seq


class Rejected(DeliveryError):
    """The cloud refused this batch's content for good (a 4xx other than :data:`RETRY_4XX`): a
    poison record is in it. Never retried as it is: the forwarder splits the batch."""


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
        self.ca_bundle = ca_bundle  # read at the first delivery: a constructor reads no file
        self.ssl: ssl.SSLContext | bool = True
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, records: Sequence[Record]) -> None:
        if self._session is None:
            if self.ca_bundle:
                self.ssl = ssl.create_default_context(cafile=self.ca_bundle)
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
                # The reply's bytes as words for the log: a charset the server names wrongly (or
                # none we know) must not turn a delivered batch into an error, sent again forever.
                text = (await r.read())[:200].decode("utf-8", errors="replace")
                if 200 <= r.status < 300:
                    return
                message = f"ingest {self.url}: HTTP {r.status} {text}"
                if r.status in RETRY_4XX or r.status >= 500:
                    retry_after_s = _retry_after(r.headers.get("Retry-After"))
                    raise DeliveryError(message, url=self.url, status=r.status, retry_after_s=retry_after_s)
                raise Rejected(message, url=self.url, status=r.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"ingest {self.url}: {exc!r}", url=self.url) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class MqttBridge:
    """Each record published to ``sites/{site}/{kind}`` at QoS 1, up to ``window`` of them before
    their PUBACKs are in (MQTT 3.1.1, 4.3.2: a sender may have many QoS 1 messages in flight).

    Why a window: one record per round trip is 20 records/s at 50 ms; a site's 20,000-record batch
    would take 1,000 s. The cloud deduplicates by ``(site, seq)``, so records arriving out of order
    or twice are safe. A failed delivery raises :class:`DeliveryError` whose ``delivered_seq`` is
    the last record of the longest run from the start of the batch whose PUBACKs all arrived: the
    forwarder moves the outbox cursor that far, never past a record without its PUBACK.
    """

    def __init__(
        self,
        url: str,
        site: str,
        *,
        ca_bundle: str = "",
        window: int = 100,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = "mqtt"
        self.url = url
        self.site = site
        self.window = max(1, window)
        self.timeout_s = timeout_s
        self.endpoint = mqtt_link.Endpoint.from_url(url)  # ValueError: the service names the key
        self.tls = mqtt_link.Tls(ca_file=ca_bundle)
        self._client: paho.Client | None = None
        self._current: paho.Client | None = None  # the connection whose callbacks count
        self._connack: asyncio.Future[None] | None = None
        self._flight: dict[int, int] = {}  # paho mid -> index in the batch being delivered
        self._acked: list[bool] = []
        self._room: asyncio.Event = asyncio.Event()  # set when a PUBACK frees a place, or the link fails
        self._lost: str | None = None

    # -- paho's events, on the loop ---------------------------------------------------------------

    def _connected(self, _gen: int, _present: bool, reason: ReasonCode) -> None:
        if self._connack is not None and not self._connack.done():
            if reason.is_failure:
                self._connack.set_exception(DeliveryError(f"cloud broker refused us: {reason}", url=self.url))
            else:
                self._connack.set_result(None)

    def _disconnected(self, reason: ReasonCode | int) -> None:
        self._lost = f"connection lost ({reason})"
        self._room.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(DeliveryError(f"cloud broker: {self._lost}", url=self.url))

    def _published(self, mid: int, reason: int) -> None:
        index = self._flight.pop(mid, None)
        if index is not None and reason < 0x80:
            self._acked[index] = True
        self._room.set()

    # -- delivery ----------------------------------------------------------------------------------

    async def _connect(self) -> paho.Client:
        loop = asyncio.get_running_loop()
        client = mqtt_link.make_client(self.endpoint, f"ota-gateway-{self.site}", self.tls, v5=False)
        client.max_inflight_messages_set(self.window)

        # callbacks of a connection we dropped may still arrive: only the current one's count
        def current(fn: Callable[..., None]) -> Callable[..., None]:
            return lambda *args: fn(*args) if self._current is client else None

        mqtt_link.LoopBridge(
            client,
            loop,
            on_connect=current(self._connected),
            on_disconnect=current(self._disconnected),
            on_publish=current(self._published),
        )
        self._current = client
        self._connack = loop.create_future()
        self._lost = None
        host = self.endpoint.host
        try:
            await asyncio.wait_for(
                asyncio.to_thread(client.connect, host, self.endpoint.port, 30), self.timeout_s
            )
            client.loop_start()
            await asyncio.wait_for(self._connack, self.timeout_s)
        except DeliveryError:
            await self._stop(client)
            raise
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            await self._stop(client)
            raise DeliveryError(f"cloud broker {host}: {exc!r}", url=self.url) from exc
        return client

    async def deliver(self, records: Sequence[Record]) -> None:
        if self._client is None:
            self._client = await self._connect()
        client = self._client
        self._flight.clear()
        self._acked = [False] * len(records)
        try:
            for i, r in enumerate(records):
                await self._wait(lambda: len(self._flight) < self.window)
                payload = json.dumps({"site": self.site, **r.to_json()}, separators=(",", ":")).encode()
                info = client.publish(f"sites/{self.site}/{r.kind}", payload, qos=1)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    raise DeliveryError(f"cloud broker publish: {paho.error_string(info.rc)}", url=self.url)
                self._flight[info.mid] = i
            await self._wait(lambda: not self._flight)
            if not all(self._acked):
                raise DeliveryError("cloud broker refused a record (PUBACK reason code)", url=self.url)
        except DeliveryError as exc:  # the next delivery starts on a fresh connection
            done = self._prefix(records)
            await self._drop()
            raise DeliveryError(str(exc), url=self.url, delivered_seq=done) from exc
        except Exception:  # a bug or a library error: a fresh connection too, the error as it is
            await self._drop()
            raise

    async def _wait(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()``; a lost link or no PUBACK within ``timeout_s`` is a DeliveryError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while not ready():
            if self._lost is not None:
                raise DeliveryError(f"cloud broker: {self._lost}", url=self.url)
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise DeliveryError(f"cloud broker: no PUBACK in {self.timeout_s} s", url=self.url) from None

    def _prefix(self, records: Sequence[Record]) -> int | None:
        n = 0
        while n < len(records) and self._acked[n]:
            n += 1
        return records[n - 1].seq if n else None

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._stop(client)

    @staticmethod
    async def _stop(client: paho.Client) -> None:
        try:
            client.disconnect()
        except Exception:
            log.debug("disconnect from the cloud broker failed", exc_info=True)
        await asyncio.to_thread(client.loop_stop)

    async def close(self) -> None:
        await self._drop()
