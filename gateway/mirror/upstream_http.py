"""The HTTP(S) upstream: conditional GETs and ranged streams with aiohttp, library exceptions turned
into :class:`TransportError` with one short line (:func:`describe`). Honours the proxy variables
(``trust_env``) and verifies TLS against the system store or a configured CA bundle."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from gateway.core.errors import ConfigError, NotModified, TransportError
from gateway.core.settings import MirrorSettings
from gateway.mirror.upstream import CHUNK_BYTES, Fetched, Stream


def describe(exc: BaseException) -> str:
    """A library exception in one short line (its repr runs to hundreds of characters)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {exc.host} refused ({exc.certificate_error})"[:160]
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the transfer was cut short"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class _HttpStream:
    def __init__(self, resp: aiohttp.ClientResponse, start: int, total: int | None) -> None:
        self._resp = resp
        self.status = resp.status
        self.start = start
        self.total = total
        self.etag = resp.headers.get("ETag")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"transfer cut: {describe(exc)}", url=str(self._resp.url)) from exc

    async def close(self) -> None:
        self._resp.release()


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes 100-199/*`` -> (100, None)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        first = int(span.split("-", 1)[0])
        return first, None if total == "*" else int(total)
    except ValueError:
        return None


@dataclass(frozen=True)
class Credentials:
    """What a child gateway shows its parent (tiers): a bearer token and/or a TLS client
    certificate, and its own site name (``X-OTA-Gateway``) so the parent can list it."""

    token: str = ""
    client_cert: str = ""  # PEM chain; with client_key
    client_key: str = ""
    site: str = ""

    @classmethod
    def of(cls, settings: MirrorSettings, site: str = "") -> Credentials:
        return cls(settings.token, settings.client_cert, settings.client_key, site)

    def headers(self) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.site:
            out["X-OTA-Gateway"] = self.site
        return out


class HttpUpstream:
    def __init__(
        self,
        base: str,
        *,
        ca_bundle: str = "",
        connect_timeout_s: float = 10,
        read_timeout_s: float = 30,
        credentials: Credentials | None = None,
    ) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.description = self.base
        self.credentials = credentials or Credentials()
        self._ssl: ssl.SSLContext | bool = True
        if ca_bundle or self.credentials.client_cert:
            self._ssl = ssl.create_default_context(cafile=ca_bundle or None)
        if self.credentials.client_cert and isinstance(self._ssl, ssl.SSLContext):
            try:
                self._ssl.load_cert_chain(self.credentials.client_cert, self.credentials.client_key or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    self.credentials.client_cert, "mirror.client_cert", f"a PEM certificate and key ({exc})"
                ) from exc
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as factories need
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
                auto_decompress=False,
                headers={"User-Agent": "ota-gateway", **self.credentials.headers()},
            )
        return self._session

    def url(self, rel: str) -> str:
        return urljoin(self.base, rel)

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        url = self.url(rel)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self._http().get(url, headers=headers) as resp:
                if resp.status == 304:
                    raise NotModified("not modified", status=304, url=url)
                if resp.status != 200:
                    raise TransportError(f"GET {url}: HTTP {resp.status}", status=resp.status, url=url)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    body += chunk
                    if len(body) > max_bytes:
                        raise TransportError(
                            f"GET {url}: more than {max_bytes} bytes", status=resp.status, url=url
                        )
                return Fetched(bytes(body), resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"GET {url}: {describe(exc)}", url=url) from exc

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        url = self.url(rel)
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if if_range:
                headers["If-Range"] = if_range
        try:
            resp = await self._http().get(url, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"GET {url}: {describe(exc)}", url=url) from exc
        if resp.status == 206:
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != offset:
                resp.release()
                raise TransportError(f"GET {url}: 206 for the wrong range", status=206, url=url)
            return _HttpStream(resp, offset, cr[1])
        if resp.status == 200:
            return _HttpStream(resp, 0, resp.content_length)
        resp.release()
        raise TransportError(f"GET {url}: HTTP {resp.status}", status=resp.status, url=url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
