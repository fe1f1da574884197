"""The upstream registry behind one narrow interface: HTTP(S) or a local folder.

Two calls are all the mirror needs: a small conditional GET (index, key list, signature) and a
ranged stream of an artifact. Library exceptions become :class:`TransportError` here, at the seam
(the httpx pattern); whether the bytes are *good* is not this module's business
(:mod:`gateway.trust`).

HTTP honours ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (``trust_env``) and verifies TLS against the
system store or a configured CA bundle. A folder upstream (a path or ``file://``) serves air-gapped
sites and USB bundles; it never reads outside its folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urljoin, urlparse

import aiohttp

from gateway.core.errors import ConfigError, NotModified, TransportError
from gateway.core.settings import MirrorSettings
from gateway.runtime.tasks import in_thread

CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class Fetched:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None


class Stream(Protocol):
    status: int  # 200 (whole body from byte 0) or 206 (from the asked offset)
    start: int
    total: int | None  # full resource length when the upstream says it
    etag: str | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    description: str

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        """Fetch a small file; NotModified when the validators match; TransportError otherwise."""

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        """Open the resource from ``offset`` (Range + If-Range when offset > 0)."""

    async def close(self) -> None: ...


SCHEMES = ("http", "https", "file")


def make_upstream(
    spec: str,
    *,
    ca_bundle: str = "",
    connect_timeout_s: float = 10,
    read_timeout_s: float = 30,
    credentials: Credentials | None = None,
) -> Upstream:
    """The upstream ``spec`` names; a typo stops start-up (:class:`ConfigError` on ``mirror.upstream``):
    an unknown scheme (``htps://``), an http(s) URL without a host, a folder that does not exist."""
    if not spec:
        return NoUpstream()
    parsed = urlparse(spec)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(
                "configuration", "mirror.upstream", f"a URL with a host name ({spec!r} has none)"
            )
        return HttpUpstream(
            spec,
            ca_bundle=ca_bundle,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            credentials=credentials,
        )
    if parsed.scheme == "file":
        root = Path(unquote(parsed.path))
    elif parsed.scheme or "://" in spec:
        raise ConfigError(
            "configuration",
            "mirror.upstream",
            f"an http://, https:// or file:// URL or a folder path (not the scheme {parsed.scheme or spec!r})",
        )
    else:
        root = Path(spec)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError("configuration", "mirror.upstream", f"an existing registry folder ({root} {what})")
    return DirUpstream(root)


class NoUpstream:
    """``mirror.upstream = ""``: an air-gapped site, where only bundles bring indexes and artifacts."""

    description = "none (mirror.upstream is empty: bundles only)"

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        raise TransportError(f"{rel}: no upstream", status=404, url=None)

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        raise TransportError(f"{rel}: no upstream", status=404, url=None)

    async def close(self) -> None:
        return None


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


def upstream_from(settings: MirrorSettings, *, site: str = "") -> Upstream:
    return make_upstream(
        settings.upstream,
        ca_bundle=settings.ca_bundle,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        credentials=Credentials.of(settings, site),
    )


# -- HTTP ----------------------------------------------------------------------------------------


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


# -- folder --------------------------------------------------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


class _FileStream:
    def __init__(self, path: Path, start: int, total: int, etag: str) -> None:
        self.status = 206 if start else 200
        self.start = start
        self.total: int | None = total
        self.etag: str | None = etag
        self._path = path

    async def chunks(self) -> AsyncIterator[bytes]:
        # Each step finishes in its thread even when the reader is cancelled (``in_thread``): the
        # file is closed after its last read, and a file opened for a cancelled reader is closed.
        f = await in_thread(_open_binary, self._path, discard=lambda f: f.close())
        try:
            await in_thread(f.seek, self.start)
            while chunk := await in_thread(f.read, CHUNK_BYTES):
                yield chunk
        finally:
            f.close()

    async def close(self) -> None:
        return None


class DirUpstream:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _path(self, rel: str) -> Path:
        if urlparse(rel).scheme:
            raise TransportError(f"{rel}: a folder upstream serves relative paths only", url=rel)
        path = (self.root / unquote(rel)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise TransportError(f"{rel}: outside the registry folder", status=404, url=rel)
        return path

    @staticmethod
    def _validators(st: os.stat_result) -> tuple[str, str]:
        tag = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()[:32]
        return f'"{tag}"', formatdate(st.st_mtime, usegmt=True)

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        path = self._path(rel)

        def read() -> Fetched:
            try:
                st = path.stat()
            except FileNotFoundError as exc:
                raise TransportError(f"{path}: not found", status=404, url=str(path)) from exc
            tag, modified = self._validators(st)
            if etag == tag:
                raise NotModified("not modified", status=304, url=str(path))
            if st.st_size > max_bytes:
                raise TransportError(f"{path}: more than {max_bytes} bytes", url=str(path))
            return Fetched(path.read_bytes()[: max_bytes + 1], tag, modified)

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror}", url=str(path)) from exc

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        path = self._path(rel)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError as exc:
            raise TransportError(f"{path}: not found", status=404, url=str(path)) from exc
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror}", url=str(path)) from exc
        tag, _ = self._validators(st)
        start = offset if (offset and (if_range is None or if_range == tag) and offset <= st.st_size) else 0
        return _FileStream(path, start, st.st_size, tag)

    async def close(self) -> None:
        return None
