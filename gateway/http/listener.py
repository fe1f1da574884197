"""The HTTP listeners (device API, operator API): aiohttp's runner behind a guarded accept loop.

What aiohttp gives and we use: ``keepalive_timeout`` (``http.idle_timeout_s``: an idle keep-alive
connection is closed), and its bounds on request lines and header fields (``max_line_size``,
``max_field_size``, ``max_headers``: 8190 bytes, 8190 bytes, 128 by default, kept).

What aiohttp 3.14 does not have, added here:

- a connection cap (``http.max_connections``): a connection past it is closed as soon as it is
  accepted, after a one-line ``503`` with ``Retry-After`` on plain HTTP; it never reaches aiohttp.
  New clients are served again as soon as old ones go;
- a header timeout (``http.header_timeout_s``): a client must finish a request head within that
  time of opening the connection, or of sending the first byte of its next request on a
  keep-alive connection; otherwise it is dropped (slowloris). aiohttp's keep-alive timer alone
  would give it ``keepalive_timeout`` (an hour by default). Over HTTPS the TLS handshake gets the
  same limit. A request being handled (a long poll, a download) is never cut by it;
- accept errors (out of descriptors) paused and logged once per interval: :mod:`gateway.runtime.accept`;
- requests aiohttp's parser refuses (it answers ``400``) are logged by aiohttp at ERROR with a
  traceback each: a client sending junk would flood the log. :class:`QuietMalformed` turns them
  into one line per interval with a count (``http.malformed`` in the counters).

The header timer reads three attributes of aiohttp's ``RequestHandler`` (``_request_count``,
``_request_in_progress``, ``_messages``), as aiohttp exposes no hook for "a request head was
parsed"; the slowloris test in ``tests/http_api/test_listener.py`` fails if they change meaning.

On plain HTTP, simple verified-blob downloads are answered before aiohttp sees them
(:mod:`gateway.http.fast_downloads`, a ``FastLane`` per connection) until a connection asks for
anything else, and from then on aiohttp has it. While the lane has it, aiohttp's keep-alive timer
(``_keepalive_handle``, armed from the accept) is cancelled: the lane closes idle connections
itself; ``tests/http_api/test_fast_downloads.py`` fails if a download outlives the idle timeout
and gets cut, or an idle connection stays open.

What it leaves to others: the routes (``gateway.http.app``, ``gateway.http.operator``), TLS
settings (``gateway.http.tls``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from gateway.core.settings import HttpSettings, Settings
from gateway.http.fast_downloads import FastDownloads, FastLane
from gateway.http.sendfile import plain_socket
from gateway.runtime.accept import Acceptor, bind_sockets, raise_descriptor_limit
from gateway.runtime.stats import Stats

log = logging.getLogger(__name__)

REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
BACKLOG = 1024
OPERATOR_MAX_CONNECTIONS = 1024
OWN_DESCRIPTORS = 256  # files, the store, the outbox, mDNS, upstream connections


def ensure_descriptors(settings: Settings) -> int:
    """Make room for every connection the caps allow (raising the soft descriptor limit where the
    hard one lets us). When they still do not fit, say so at INFO: the caps are ceilings a site
    rarely reaches, so a normal start warns of nothing; the limit is a WARNING-worthy fact only where
    it binds, when accepts fail for want of descriptors (:mod:`gateway.runtime.accept` says it then, naming
    the limit). Returns the limit in force."""
    h, m = settings.http, settings.mqtt
    wanted = (
        h.max_connections
        + min(h.max_connections, OPERATOR_MAX_CONNECTIONS)
        + m.max_connections
        + m.max_pending_connections
        + OWN_DESCRIPTORS
    )
    limit = raise_descriptor_limit(wanted)
    if limit < wanted:
        log.info(
            "file descriptor limit %d, below the %d the connection caps allow (http.max_connections, "
            "mqtt.max_connections, ...): should connections reach it, accepts pause until some close "
            "(raise LimitNOFILE or lower the caps)",
            limit,
            wanted,
        )
    return limit


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    header_timeout_s: float
    idle_timeout_s: float

    @classmethod
    def from_settings(cls, s: HttpSettings) -> HttpLimits:
        return cls(s.max_connections, s.header_timeout_s, s.idle_timeout_s)


class Guard:
    """One listener's live connections and limits; makes the per-connection protocol wrappers."""

    def __init__(
        self, name: str, limits: HttpLimits, stats: Stats, fast: FastDownloads | None = None
    ) -> None:
        self.name = name
        self.limits = limits
        self.stats = stats
        self.fast = fast  # verified-blob downloads answered beside aiohttp (plain HTTP only)
        self.live = 0

    def admit(self) -> bool:
        return self.live < self.limits.max_connections

    def wrap(self, inner: RequestHandler) -> GuardedProtocol:
        self.live += 1  # counted from the accept, TLS handshake included
        return GuardedProtocol(inner, self)

    def forget(self, protocol: asyncio.BaseProtocol) -> None:
        """A protocol that never connected (failed TLS handshake)."""
        if isinstance(protocol, GuardedProtocol):
            protocol.release()


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's ``RequestHandler`` with a count and a header deadline around it.

    Everything the transport says is passed on unchanged; this object only watches when a request
    head starts and whether aiohttp has parsed it before the deadline. A head that arrives whole in
    one read (almost every request) costs no clock read at all: the time is taken only when bytes
    came and no head was completed by them. The deadline's timer is not armed and cancelled for
    every request (that cost a timer per poll): it is armed when a head starts and none is pending,
    and when it fires it looks at the head that is waiting now, if any, and sleeps again until that
    one's own deadline.
    """

    __slots__ = ("_counted", "_guard", "_head_at", "_heads", "_lane", "_timer", "_transport", "inner")

    def __init__(self, inner: RequestHandler, guard: Guard) -> None:
        self.inner = inner
        self._guard = guard
        self._counted = True
        self._timer: asyncio.TimerHandle | None = None
        self._head_at: float | None = None  # when the head being waited for began
        self._heads = 0
        self._transport: asyncio.Transport | None = None
        self._lane: FastLane | None = None  # until the connection asks for more than a download

    def release(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.live -= 1

    def _head_started(self) -> None:
        loop = asyncio.get_running_loop()
        self._heads = self.inner._request_count
        self._head_at = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._head_at + self._guard.limits.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        self._head_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._head_at is None:
            return  # every head so far was parsed in time
        deadline = self._head_at + self._guard.limits.header_timeout_s
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:  # a later head: wait for its own deadline
            self._timer = loop.call_at(deadline, self._expired)
            return
        inner = self.inner
        if inner._request_count != self._heads or inner._request_in_progress or inner._messages:
            return  # a head arrived; a request is being handled
        self._guard.stats.inc(f"{self._guard.name}.header_timeouts")
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows; aiohttp cleans up there

    # -- asyncio.Protocol, passed on -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.inner.connection_made(transport)
        self._head_started()
        fast, sock = self._guard.fast, plain_socket(transport)
        if fast is not None and sock is not None:
            self._lane = FastLane(fast, transport, sock, self._to_aiohttp, self._guard.limits.idle_timeout_s)
            # aiohttp's keep-alive timer, armed from the accept, would cut a download the lane is
            # sending (to aiohttp the connection looks idle): the lane's own idle timer stands in,
            # and aiohttp arms its timer again after the first request it answers.
            if (keepalive := self.inner._keepalive_handle) is not None:
                keepalive.cancel()
                self.inner._keepalive_handle = None

    def data_received(self, data: bytes) -> None:
        if self._lane is not None:
            self._head_at = None  # the lane answers whole heads; what it hands over is timed below
            self._lane.data(data)
        else:
            self._to_aiohttp(data)

    def _to_aiohttp(self, data: bytes) -> None:
        self._lane = None
        inner = self.inner
        heads = inner._request_count
        inner.data_received(data)
        if inner._request_count != heads or inner._request_in_progress or inner._messages:
            self._head_at = None  # parsed in time; the timer, if it fires, finds nothing waiting
        elif self._head_at is None:
            self._head_started()  # the first bytes of a head that is not complete yet

    def eof_received(self) -> None:
        self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.release()
        self._transport = None
        if self._lane is not None:
            self._lane.lost()
            self._lane = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A ``web.TCPSite`` that accepts through :class:`gateway.runtime.accept.Acceptor` with a :class:`Guard`."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: Guard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        sockets = bind_sockets(self._host, self._port, backlog=self._backlog)
        acceptor = Acceptor(
            sockets,
            lambda: guard.wrap(server()),
            name=guard.name,
            admit=guard.admit,
            refusal=REFUSAL,
            on_failed=guard.forget,
            ssl_context=self._ssl_context,
            ssl_handshake_timeout_s=guard.limits.header_timeout_s,
            count=guard.stats.inc,
        )
        acceptor.start()
        self._server = acceptor  # type: ignore[assignment]  # quacks like asyncio.Server for the runner


class QuietMalformed(logging.Filter):
    """One warning per ``interval_s`` for requests aiohttp's parser refused, instead of a traceback
    each; everything else aiohttp logs passes untouched."""

    def __init__(self, stats: Stats, interval_s: float = 10.0) -> None:
        super().__init__()
        self.stats = stats
        self.interval_s = interval_s
        self.count = 0
        self.next_at = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.count += 1
        self.stats.inc("http.malformed")
        now = time.monotonic()
        if now < self.next_at:
            return False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        record.msg = "refused %d malformed HTTP request(s) in the last %g s (last: %s)"
        record.args = (self.count, self.interval_s, first[:120])
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.count, self.next_at = 0, now + self.interval_s
        return True


def quiet_malformed(stats: Stats) -> None:
    """Install :class:`QuietMalformed` on aiohttp's server logger (one per process; a gateway
    started again in the same process, as in the tests, takes it over with its own counters)."""
    logger = logging.getLogger("aiohttp.server")
    for f in list(logger.filters):
        if isinstance(f, QuietMalformed):
            logger.removeFilter(f)
    logger.addFilter(QuietMalformed(stats))


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    limits: HttpLimits,
    stats: Stats,
    tls: ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 2.0,
    guard: Guard | None = None,
) -> tuple[web.AppRunner, list[Any]]:
    """Start ``app`` on ``host:port`` behind the guards (``guard``, whose ``live`` count the caller
    may read, or a new one); returns the runner (for cleanup) and the bound addresses. Raises
    OSError when the address cannot be bound."""
    quiet_malformed(stats)
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout_s,
        keepalive_timeout=limits.idle_timeout_s,
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, guard or Guard(name, limits, stats), ssl_context=tls)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, list(runner.addresses)
