"""The uplink relay of a parent gateway (tiers): a child's outbox records, journalled into ours.

A child gateway points its ``uplink.ingest_url`` at ``http://parent:8080/uplink/batches`` and its
``uplink.ingest_token`` at its own secret in the parent's ``mirror.child_tokens``
(``"<child site>=<secret>"``): its forwarder's HTTP sink then sends here the very body it would
send the cloud (gzip JSON ``{"site": ..., "records": [{"seq", "kind", "at", "body"}, ...]}``). Who
may: only that child's credential (the secret, or in mTLS a client certificate whose CN is
``gateway.<site>``), and only for its own ``site``. A device credential cannot relay (403): a
device speaks only for itself.

Each child record becomes one record of kind ``relay`` in the parent's outbox, body ``{"site",
"seq", "kind", "at", "body"}`` (the child's own fields untouched), and the answer is 200 only once
all of them are committed: the child's cursor moves only past records durable here, so the
lossless guarantee holds across the tier. A child that re-sends a batch whose answer it lost is
answered 200 again without journalling the records twice: the parent keeps each child's newest
``seq`` -> ``at`` (at most ``REMEMBERED_SEQS`` per child, so it cannot grow; a child's own batches
arriving in between do not push a re-sent one out). A duplicate that still gets through
(after a parent restart) is harmless: the cloud deduplicates a relayed record by its child's
``(site, seq)``.

Bounds, and the event loop: a body of at most ``MAX_BYTES`` on the wire and once decompressed, at
most ``MAX_RECORDS`` records (a child's forwarder sends up to 20,000); parsed in a worker thread one
record at a time (so no single call holds the interpreter for the whole body) and journalled in one
commit by the outbox in a worker thread. The outbox never sheds a record for a relayed one: a child
whose records hold ``uplink.relay_quota_bytes`` of it, or an outbox that is full, gets 503 with
``Retry-After`` and re-sends later. The quota in effect is at most half the outbox shared among the
child sites, so the site's own records always keep at least half of it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.core import jsondoc
from gateway.core.errors import FormatError, OutboxFullError, StorageError
from gateway.core.manifest import valid_id
from gateway.core.settings import Settings
from gateway.http import devices
from gateway.http.context import CHILDREN, CLOCK, INVENTORY, RELAY, RELAY_QUOTA, STATS, RelayJournal
from gateway.http.errors import storage_unavailable

PATH = "/uplink/batches"
# A child's forwarder sends up to 16 MiB of record bodies per batch (plus a few dozen bytes of
# fields per record): the bound on the body, on the wire and once decompressed.
MAX_BYTES = 32 << 20
MAX_KIND_CHARS = 64
MAX_RECORDS = 20_000  # gateway.uplink.forwarder.BATCH_RECORDS: what a child's forwarder sends at most
FULL_RETRY_AFTER_S = 30
_DECODER = json.JSONDecoder()
_STEP = 1 << 20
_YIELD_EVERY = 500  # records a worker thread handles before it lets the event loop in
_SPACE = re.compile(r"[ \t\n\r]*")
REMEMBERED_SEQS = 10_000
LAST_BATCHES: web.AppKey[dict[str, dict[int, float]]] = web.AppKey("relay_last_batches")
WORKER: web.AppKey[ThreadPoolExecutor] = web.AppKey("relay_worker", ThreadPoolExecutor)
WORKER_NICE = 10
T = TypeVar("T")


def too_large() -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=MAX_BYTES, actual_size=MAX_BYTES + 1, text=f"batch larger than {MAX_BYTES} bytes\n"
    )


async def read_body(request: web.Request) -> bytearray:
    """The body, at most ``MAX_BYTES`` on the wire and decompressed (aiohttp inflates a gzip body
    as it streams: a bomb stops at the bound); 413 past it, 400 for a broken gzip stream."""
    if request.content_length is not None and request.content_length > MAX_BYTES:
        raise too_large()
    raw = bytearray()
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            raw += chunk
            if len(raw) > MAX_BYTES:
                raise too_large()
            if len(raw) % (1 << 20) < len(chunk):  # a buffered body is read without a pause: let others in
                await asyncio.sleep(0)
    except RequestPayloadError as exc:
        raise FormatError(f"body: a broken gzip stream ({exc})") from None
    return raw  # not copied on the loop: parsed in a worker thread


class TooManyRecords(FormatError):
    """A batch of more records than one relay request may carry (413)."""


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string too


def _value(text: str, pos: int) -> tuple[Any, int]:
    """One JSON value at ``pos`` (after blanks), checked for depth as jsondoc does; its end."""
    pos = _skip(text, pos)
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except ValueError as exc:
        raise FormatError(f"body: not JSON ({exc})") from None
    except RecursionError:
        raise FormatError(f"body: JSON nested deeper than {jsondoc.MAX_DEPTH} levels") from None
    brackets = text.count("[", pos, end) + text.count("{", pos, end)
    if brackets > jsondoc.MAX_DEPTH and jsondoc.depth(text[pos:end].encode()) > jsondoc.MAX_DEPTH:
        raise FormatError(f"body: JSON nested deeper than {jsondoc.MAX_DEPTH} levels")
    return value, end


def _expect(text: str, pos: int, chars: str) -> tuple[str, int]:
    pos = _skip(text, pos)
    c = text[pos : pos + 1]
    if not c or c not in chars:
        raise FormatError(f"body: not JSON (expected one of {chars!r} at character {pos})")
    return c, pos + 1


def _records(text: str, pos: int) -> tuple[list[Any], int]:
    """The ``records`` array, one element at a time, at most ``MAX_RECORDS`` of them."""
    c, pos = _expect(text, pos, "[")
    out: list[Any] = []
    if text[_skip(text, pos) : _skip(text, pos) + 1] == "]":
        return out, _skip(text, pos) + 1
    while True:
        if len(out) == MAX_RECORDS:
            raise TooManyRecords(f"records: more than {MAX_RECORDS} in one batch")
        rec, pos = _value(text, pos)
        out.append(rec)
        if len(out) % _YIELD_EVERY == 0:
            time.sleep(0)  # hand the interpreter to the event loop now, not at the next switch interval
        c, pos = _expect(text, pos, ",]")
        if c == "]":
            return out, pos


def _top(text: str) -> dict[str, Any]:
    """The top-level object; its ``records`` read element by element."""
    _, pos = _expect(text, 0, "{")
    doc: dict[str, Any] = {}
    if text[_skip(text, pos) : _skip(text, pos) + 1] == "}":
        pos = _skip(text, pos) + 1
    else:
        while True:
            key, pos = _value(text, pos)
            if not isinstance(key, str):
                raise FormatError("body: not JSON (an object key must be a string)")
            _, pos = _expect(text, pos, ":")
            listed = key == "records" and text[_skip(text, pos) : _skip(text, pos) + 1] == "["
            doc[key], pos = _records(text, pos) if listed else _value(text, pos)
            c, pos = _expect(text, pos, ",}")
            if c == "}":
                break
    if _skip(text, pos) != len(text):
        raise FormatError("body: not JSON (extra data after the object)")
    return doc


def parse_batch(data: bytes | bytearray) -> tuple[str, list[dict[str, Any]]]:
    """``(site, records)`` of a batch; FormatError names what is wrong. Blocking, for a worker
    thread: json's decoder runs on one record at a time, so the thread lets the event loop in
    between records however large the batch."""
    try:  # in 1 MiB steps: one decode of 32 MiB would hold the interpreter for tens of milliseconds
        utf8 = codecs.getincrementaldecoder("utf-8")()
        text = "".join(
            [*(utf8.decode(data[i : i + _STEP]) for i in range(0, len(data), _STEP)), utf8.decode(b"", True)]
        )
    except UnicodeDecodeError:
        raise FormatError("body: not UTF-8 JSON") from None
    if not text.lstrip(" \t\n\r").startswith("{"):
        raise FormatError("body: expected a JSON object")
    doc = _top(text)
    site, records = doc.get("site"), doc.get("records")
    if not isinstance(site, str) or not valid_id(site):
        raise FormatError("site: a site name of letters, digits, '.', '_' or '-'")
    if not isinstance(records, list):
        raise FormatError("records: expected a list")
    return site, [_record(i, rec, site) for i, rec in enumerate(records)]


def _record(i: int, rec: Any, site: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise FormatError(f"records[{i}]: expected an object")
    seq, kind, at, body = rec.get("seq"), rec.get("kind"), rec.get("at"), rec.get("body")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise FormatError(f"records[{i}].seq: a whole number of at least 1")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_KIND_CHARS or not kind.isprintable():
        raise FormatError(f"records[{i}].kind: a name of at most {MAX_KIND_CHARS} characters")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise FormatError(f"records[{i}].at: a time in seconds")
    if not isinstance(body, dict):
        raise FormatError(f"records[{i}].body: expected an object")
    return {"site": site, "seq": seq, "kind": kind, "at": float(at), "body": body}


def relay_quota(settings: Settings) -> int:
    """Outbox bytes one child's records may hold: the configured quota, at most half the outbox
    shared among the child sites (the site's own records keep the other half)."""
    share = settings.uplink.outbox_max_bytes // 2 // max(1, len(settings.mirror.child_sites))
    return min(settings.uplink.relay_quota_bytes, share)


def child_site(request: web.Request) -> str:
    """The child site this request's credential belongs to; 401 without one, 403 for a device's."""
    app = request.app
    bearer, cert_cn = devices.bearer_of(request), devices.cert_cn_of(request)
    site = app[CHILDREN].site_of(bearer=bearer, cert_cn=cert_cn)
    if site is not None:
        return site
    app[STATS].inc("relay.refused_403" if bearer or cert_cn else "relay.refused_401")
    why = "relaying needs a child gateway's own credential (its secret in mirror.child_tokens)"
    if bearer is None and cert_cn is None:
        raise web.HTTPUnauthorized(text=f"{why}\n")
    raise web.HTTPForbidden(text=f"{why}; a device credential cannot relay\n")


def _fresh(records: list[dict[str, Any]], last: dict[int, float]) -> list[str]:
    """The records not journalled already (a re-sent batch), as the outbox's JSON text. Blocking."""
    out = []
    for i, r in enumerate(records, 1):
        if last.get(r["seq"]) != r["at"]:
            out.append(json.dumps(r, separators=(",", ":"), sort_keys=True))
        if i % _YIELD_EVERY == 0:
            time.sleep(0)  # as in _records
    return out


async def relay_batch(request: web.Request) -> web.Response:
    """200 ``{"accepted": n, "duplicates": m}`` once every new record is committed in our outbox."""
    app = request.app
    site = child_site(request)
    data = await read_body(request)
    try:
        claimed, records = await _in_worker(app, parse_batch, data)
    except TooManyRecords as exc:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BYTES, actual_size=len(data), text=f"{exc}\n"
        ) from None
    if claimed != site:
        app[STATS].inc("relay.refused_403")
        raise web.HTTPForbidden(
            text=f"this credential is child site {site!r}'s: it cannot relay for {claimed!r}\n"
        )
    now = app[CLOCK]()
    try:
        texts = await _in_worker(app, _fresh, records, app[LAST_BATCHES].get(site, {}))
        await asyncio.to_thread(
            app[RELAY].append_bounded, "relay", texts, now, key=site, quota_bytes=app[RELAY_QUOTA]
        )
    except OutboxFullError as exc:
        app[STATS].inc("relay.refused_full")
        raise web.HTTPServiceUnavailable(
            text=f"no room for this batch now ({exc}); retry later\n",
            headers={"Retry-After": str(FULL_RETRY_AFTER_S)},
        ) from None
    except StorageError as exc:
        raise storage_unavailable(request, "relay.unavailable", "store the batch", exc) from None
    if records:  # the newest seqs, in arrival order; the oldest go past the bound
        remembered = app[LAST_BATCHES].setdefault(site, {})
        remembered.update((r["seq"], r["at"]) for r in records)
        for seq in list(itertools.islice(remembered, max(0, len(remembered) - REMEMBERED_SEQS))):
            del remembered[seq]
    app[STATS].inc("relay.records", len(texts))
    app[STATS].inc("relay.duplicates", len(records) - len(texts))
    app[INVENTORY].upsert(f"gateway.{site}", {"kind": "gateway", "site": site}, source="tier", now=now)
    return web.json_response({"accepted": len(texts), "duplicates": len(records) - len(texts)})


def _lower_priority() -> None:
    """The relay worker yields the CPU to the event loop's thread (Linux: a thread's own nice value)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)


async def _in_worker(app: web.Application, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(app[WORKER], fn, *args)


async def _stop_worker(app: web.Application) -> None:
    app[WORKER].shutdown(wait=False, cancel_futures=True)


def add_relay_routes(app: web.Application, relay: RelayJournal, settings: Settings) -> None:
    app[RELAY], app[RELAY_QUOTA], app[LAST_BATCHES] = relay, relay_quota(settings), {}
    # One thread of its own, at a lower priority, parses batches: one at a time (a flood of posts
    # cannot take every worker of the loop's default executor), never before the loop's own work.
    app[WORKER] = ThreadPoolExecutor(1, thread_name_prefix="relay-parse", initializer=_lower_priority)
    app.on_cleanup.append(_stop_worker)
    app.router.add_post(PATH, relay_batch)
