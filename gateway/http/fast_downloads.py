"""Verified-blob downloads answered beside aiohttp, on plain HTTP: the path large sites take.

Measured on 1 MiB ranges (issue 27), aiohttp's request machinery and our handler cost 160 us of
user CPU per request beside the kernel's 450 for the ``sendfile`` of the megabyte (nginx: 12 us).
Most downloads are one simple request: ``GET /artifacts/<model>/<version>/<file>``, a head that
arrives whole in one read, maybe a ``Range``, for a verified blob. This module answers exactly
those from the connection's ``data_received``: it parses the head, checks the credential, looks
the blob up, takes it from :class:`gateway.http.open_blobs.OpenBlobs` (opened off the loop when
it is not held open), plans the range with the same pure code (:func:`gateway.http.ranges.plan`),
writes the head and hands the bytes to ``sendfile``. That costs about 35 us.

Anything else is aiohttp's, and from then on the whole connection is: a head split over reads,
several heads in one read, HEAD, HTTP/1.0, a missing or odd ``Host``, a percent sign or a query in
the target, a body, an ``Expect`` or ``Upgrade``, a header named twice that the answer reads, any
byte outside printable ASCII, a refused credential, a blob not verified (arriving, or not the file
that was verified), and any answer but 200 or a single-range 206. So the fast path never answers
a request aiohttp would refuse, and what it does answer is what the aiohttp handler
(:mod:`gateway.http.artifacts`) would say: ``tests/http_api/test_fast_downloads.py`` sends the
same requests both ways and compares.

:class:`FastLane` is one connection's side: one answer at a time (what arrives meanwhile waits,
reading paused past :data:`HOLD_BYTES`), an idle keep-alive connection closed after the listener's
idle timeout (aiohttp's own timer runs only for requests it saw), and the hand-over.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from gateway.http import sendfile
from gateway.http.artifacts import ARTIFACTS, BLOBS, lookup_artifact, valid_parts
from gateway.http.context import CREDENTIALS, STATS
from gateway.http.devices import bearer_from
from gateway.http.open_blobs import OpenBlob, OpenBlobs
from gateway.http.ranges import ByteRange, plan
from gateway.inventory.access import Credentials
from gateway.runtime.stats import Stats
from gateway.store.lookup import ArtifactLookup, Verified

log = logging.getLogger(__name__)

HOLD_BYTES = 1 << 16  # bytes that arrive while an answer is going out, before reading pauses
MAX_HEAD = 8190  # aiohttp's bound on a request line and on a header field
MAX_FIELDS = 100  # aiohttp refuses past 128
_TARGET = re.compile(rb"/artifacts/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)")
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e]*")
# What the answer reads (plan's names); each may appear once, or aiohttp takes the request.
_READ = {
    b"range": "Range",
    b"if-range": "If-Range",
    b"if-match": "If-Match",
    b"if-none-match": "If-None-Match",
    b"if-modified-since": "If-Modified-Since",
    b"if-unmodified-since": "If-Unmodified-Since",
    b"authorization": "Authorization",
}
_HOST = re.compile(rb"([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_REFUSED = frozenset((b"transfer-encoding", b"content-length", b"expect", b"upgrade"))
_REASONS = {200: "OK", 206: "Partial Content"}
_CLOSE = "Connection: close\r\n"


@dataclass
class Asked:
    """A download the fast path may answer: the verified blob and what the answer reads."""

    found: Verified
    headers: dict[str, str]  # Range and the preconditions, by plan's names
    close: bool  # the client asked for Connection: close


@dataclass
class Reply:
    """One answer decided: the response head, and the bytes of the held blob to send after it."""

    head: bytes
    blob: OpenBlob
    span: ByteRange
    close: bool  # the client asked for Connection: close


def parse_head(head: bytes) -> tuple[tuple[str, str, str], dict[str, str], bool] | None:
    """The (model, version, file) a simple download head asks for, the headers the answer reads
    and whether the client asked to close; None for anything :mod:`gateway.http.artifacts` must
    see (the module docstring lists what)."""
    if len(head) > 4 * MAX_HEAD:
        return None
    lines = head[:-4].split(b"\r\n")
    request = lines[0].split(b" ")
    if len(request) != 3 or request[0] != b"GET" or request[2] != b"HTTP/1.1" or len(lines) > MAX_FIELDS:
        return None
    target = _TARGET.fullmatch(request[1])
    if target is None:
        return None
    parts = target.group(1).decode(), target.group(2).decode(), target.group(3).decode()
    if not valid_parts(*parts):
        return None
    headers: dict[str, str] = {}
    close = False
    hosts = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or len(line) > MAX_HEAD or _NAME.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if _VALUE.fullmatch(value) is None:
            return None
        lower = name.lower()
        if lower in _REFUSED:
            return None
        if lower == b"host":  # HTTP/1.1 requires one (aiohttp answers 400 without)
            hosts += 1
            if _HOST.fullmatch(value) is None:
                return None
        elif lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if not tokens <= {b"keep-alive", b"close"}:
                return None
            close = close or b"close" in tokens
        elif (known := _READ.get(lower)) is not None:
            if known in headers:
                return None
            headers[known] = value.decode()
    if hosts != 1:
        return None
    return parts, headers, close


class FastDownloads:
    """The device app's downloads as the fast path sees them (its store, credentials, blobs)."""

    def __init__(
        self, store: ArtifactLookup, credentials: Credentials, blobs: OpenBlobs, stats: Stats
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.blobs = blobs
        self.stats = stats
        self.refused_by_kernel = False  # sendfile failed once for other than a lost connection
        self._date = (0, "")

    @classmethod
    def of(cls, app: web.Application) -> FastDownloads:
        return cls(app[ARTIFACTS], app[CREDENTIALS], app[BLOBS], app[STATS])

    def ask(self, head: bytes) -> Asked | None:
        """What a whole request head asks for, when the fast path may answer it; None: aiohttp's."""
        if self.refused_by_kernel:
            return None
        parsed = parse_head(head)
        if parsed is None:
            return None
        (model_id, version, filename), headers, close = parsed
        bearer = bearer_from(headers.get("Authorization", ""))
        if self.credentials.check_any(bearer=bearer, cert_cn=None) is not None:
            return None  # refusals, and child gateways' credentials, are the handler's
        found = lookup_artifact(self.store, model_id, version, filename)
        if not isinstance(found, Verified):
            return None
        return Asked(found, headers, close)

    def reply(self, asked: Asked, blob: OpenBlob) -> Reply | None:
        """The answer from the open blob: a 200 or a single-range 206; None for any other."""
        found = asked.found
        decided = plan(
            "GET", asked.headers, size=found.size, etag=found.sha256, last_modified=found.mtime,
            part_head=blob.part_head_len,
        )  # fmt: skip
        if decided.status == 200:
            span = ByteRange(0, found.size - 1)
        elif decided.status == 206 and len(decided.ranges) == 1:
            span = decided.ranges[0]
        else:
            return None
        ranged = f"Content-Range: {span.content_range(found.size)}\r\n" if decided.status == 206 else ""
        head = (
            f"HTTP/1.1 {decided.status} {_REASONS[decided.status]}\r\n{blob.head_fields}{ranged}"
            f"Content-Length: {span.length}\r\n{self._date_and_server()}"
            f"{_CLOSE if asked.close else ''}\r\n"
        )
        return Reply(head.encode(), blob, span, asked.close)

    def _date_and_server(self) -> str:
        """The ``Date`` and ``Server`` lines, made once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, f"Date: {formatdate(second, usegmt=True)}\r\nServer: {SERVER_SOFTWARE}\r\n")
        return self._date[1]


class FastLane:
    """One plain-HTTP connection's downloads on the fast path, until it goes to aiohttp for good
    through ``hand_over`` (with the bytes aiohttp has to parse)."""

    def __init__(
        self,
        downloads: FastDownloads,
        transport: asyncio.Transport,
        sock: socket.socket,
        hand_over: Callable[[bytes], None],
        idle_timeout_s: float,
    ) -> None:
        self.downloads = downloads
        self.transport = transport
        self.sock = sock  # the connection's socket (plain TCP: sendfile can write into it)
        self.hand_over = hand_over
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self.sending: asyncio.Task[None] | None = None
        self.held = b""
        self.paused = False
        self.idle_since: float | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.open = True

    def data(self, data: bytes) -> None:
        """Bytes from the client: answered here, held while an answer goes out, or handed over."""
        if self.sending is not None:
            self.held += data
            if len(self.held) > HOLD_BYTES and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            return
        self.idle_since = None
        asked = None
        if data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1:
            asked = self.downloads.ask(data)
        if asked is None:
            self._give_up(data)
            return
        blob = self.downloads.blobs.held(asked.found)
        if blob is None:  # not held open (first use, or its time is up): opened off the loop
            self.sending = self.loop.create_task(self._open(asked, data))
            return
        self.downloads.blobs.use(blob)
        self._answer(asked, blob, data)

    async def _open(self, asked: Asked, data: bytes) -> None:
        blob = await self.downloads.blobs.acquire(asked.found)
        self.sending = None
        if blob is None:  # not the verified file: the handler answers 503 and has it checked
            self._give_up(data + self._take_held())
            return
        self._answer(asked, blob, data)

    def _answer(self, asked: Asked, blob: OpenBlob, data: bytes) -> None:
        """Send the answer from ``blob`` (counted in use), or hand the request over."""
        reply = self.downloads.reply(asked, blob)
        if reply is None:
            self.downloads.blobs.release(blob)
            self._give_up(data + self._take_held())
            return
        self._send(reply)

    def _take_held(self) -> bytes:
        """What arrived while an answer was decided or sent, with reading resumed."""
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        held, self.held = self.held, b""
        return held

    def lost(self) -> None:
        """The connection is gone: stop the answer going out (its blob is let go) and the timer."""
        if self.sending is not None:
            self.sending.cancel()
        self._close_lane()

    def _give_up(self, data: bytes) -> None:
        self._close_lane()
        self.hand_over(data)

    def _close_lane(self) -> None:
        self.open = False
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _send(self, reply: Reply) -> None:
        file, span = reply.blob.file, reply.span
        if span.length:
            sendfile.send_head(self.transport, self.sock, reply.head)
        else:  # no body follows to push a held head
            self.transport.write(reply.head)
        try:
            sent, finished = sendfile.first_push(self.transport, self.sock, file, span.first, span.length)
        except OSError as exc:
            self._failed(reply, exc)
            return
        if finished:
            self._done(reply, sent)
            return

        async def the_rest() -> None:
            try:
                total = await sendfile.rest(self.transport, self.sock, file, span.first, span.length, sent)
            except (OSError, asyncio.SendfileNotAvailableError, NotImplementedError) as exc:
                self._failed(reply, exc)
            except asyncio.CancelledError:
                self.downloads.blobs.release(reply.blob)
                raise
            else:
                self._done(reply, total)

        self.sending = self.loop.create_task(the_rest())

    def _failed(self, reply: Reply, exc: BaseException) -> None:
        """A lost connection, or a kernel that will not send this file (then aiohttp's path, which
        reads it instead, takes every download from now on); the head is out, so the connection
        is cut and the device resumes with ``Range``."""
        self.sending = None
        self.downloads.blobs.release(reply.blob)
        if not isinstance(exc, ConnectionError):
            self.downloads.refused_by_kernel = True
            log.warning("sendfile refused (%s): downloads go through aiohttp's path from now on", exc)
        self.open = False
        self.transport.abort()

    def _done(self, reply: Reply, sent: int) -> None:
        self.sending = None
        self.downloads.blobs.release(reply.blob)
        stats = self.downloads.stats
        stats.inc("downloads.bytes", sent)
        stats.inc("downloads.fast")
        if sent < reply.span.length:  # never a short answer: cut, and the device resumes
            self.open = False
            self.transport.abort()
        elif reply.close:
            self.open = False
            self.transport.close()
        elif self.open:
            self._next()

    def _next(self) -> None:
        """What came while the answer went out, or the idle clock."""
        held = self._take_held()
        if held:
            self.data(held)
            return
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_at(self.idle_since + self.idle_timeout_s, self._idle)

    def _idle(self) -> None:
        """Close a keep-alive connection idle for the timeout (one timer, moved on when it fires
        early rather than armed anew for every answer)."""
        self.idle_timer = None
        if not self.open or self.idle_since is None:
            return
        due = self.idle_since + self.idle_timeout_s
        if self.loop.time() < due:
            self.idle_timer = self.loop.call_at(due, self._idle)
            return
        self.open = False
        self.transport.close()
