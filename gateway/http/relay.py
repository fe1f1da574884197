"""The uplink relay of a parent gateway (tiers): a child's outbox records, journalled into ours.

A child gateway points its ``uplink.ingest_url`` at ``http://parent:8080/uplink/batches`` and its
``uplink.ingest_token`` at a device token of the parent: its forwarder's HTTP sink then sends here
the very body it would send the cloud (gzip JSON ``{"site": ..., "records": [{"seq", "kind", "at",
"body"}, ...]}``). Who may: a device credential of the parent (as for the tier routes: a token, or a
client certificate in mTLS) and a ``site`` among the parent's ``mirror.child_sites``.

Each child record becomes one record of kind ``relay`` in the parent's outbox, body ``{"site",
"seq", "kind", "at", "body"}`` (the child's own fields untouched), and the answer is 200 only once
all of them are committed: the child's cursor moves only past records durable here, so the
lossless guarantee holds across the tier. A child that re-sends a batch whose answer it lost is
answered 200 again without journalling the records twice: the parent keeps each child's newest
``seq`` -> ``at`` (at most ``REMEMBERED_SEQS`` per child, so it cannot grow; a child's own batches
arriving in between do not push a re-sent one out). A duplicate that still gets through
(after a parent restart) is harmless: the cloud deduplicates a relayed record by its child's
``(site, seq)``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.core import jsondoc
from gateway.core.errors import FormatError, StorageError
from gateway.core.manifest import valid_id
from gateway.http import devices
from gateway.http.context import CHILD_SITES, CLOCK, INVENTORY, RELAY, STATS

PATH = "/uplink/batches"
# A child's forwarder sends up to 16 MiB of record bodies per batch (plus a few dozen bytes of
# fields per record): the bound on the body, on the wire and once decompressed.
MAX_BYTES = 32 << 20
MAX_KIND_CHARS = 64
REMEMBERED_SEQS = 10_000
LAST_BATCHES: web.AppKey[dict[str, dict[int, float]]] = web.AppKey("relay_last_batches")


def too_large() -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=MAX_BYTES, actual_size=MAX_BYTES + 1, text=f"batch larger than {MAX_BYTES} bytes\n"
    )


async def read_body(request: web.Request) -> bytes:
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
    except RequestPayloadError as exc:
        raise devices.bad_request(f"body: a broken gzip stream ({exc})") from None
    return bytes(raw)


def parse_batch(data: bytes) -> tuple[str, list[dict[str, Any]]]:
    """``(site, records)`` of a batch; FormatError names what is wrong."""
    doc = jsondoc.loads(data)
    if not isinstance(doc, dict):
        raise FormatError("body: expected a JSON object")
    site, records = doc.get("site"), doc.get("records")
    if not isinstance(site, str) or not valid_id(site):
        raise FormatError("site: a site name of letters, digits, '.', '_' or '-'")
    if not isinstance(records, list):
        raise FormatError("records: expected a list")
    out = []
    for i, rec in enumerate(records):
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
        out.append({"site": site, "seq": seq, "kind": kind, "at": float(at), "body": body})
    return site, out


async def committed(futures: list[asyncio.Future[int]]) -> None:
    """Every append committed; else the first failure (each future's outcome is retrieved)."""
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def relay_batch(request: web.Request) -> web.Response:
    """200 ``{"accepted": n, "duplicates": m}`` once every new record is committed in our outbox."""
    app = request.app
    await devices.authorize_any(request)
    try:
        site, records = parse_batch(await read_body(request))
    except FormatError as exc:
        raise devices.bad_request(str(exc)) from None
    if site not in app[CHILD_SITES]:
        app[STATS].inc("relay.refused_403")
        raise web.HTTPForbidden(text=f"site {site!r} is not one of this gateway's mirror.child_sites\n")
    last = app[LAST_BATCHES].get(site, {})
    fresh = [r for r in records if last.get(r["seq"]) != r["at"]]
    now = app[CLOCK]()
    try:
        await committed([app[RELAY].append_nowait("relay", r, now) for r in fresh])
    except StorageError as exc:
        app[STATS].error("relay.unavailable", str(exc))
        raise web.HTTPServiceUnavailable(
            text=f"cannot store the batch now ({exc}); retry later\n",
            headers={"Retry-After": str(devices.STORAGE_RETRY_AFTER_S)},
        ) from None
    if records:  # the newest seqs, in arrival order; the oldest go past the bound
        remembered = app[LAST_BATCHES].setdefault(site, {})
        remembered.update((r["seq"], r["at"]) for r in records)
        for seq in list(itertools.islice(remembered, max(0, len(remembered) - REMEMBERED_SEQS))):
            del remembered[seq]
    app[STATS].inc("relay.records", len(fresh))
    app[STATS].inc("relay.duplicates", len(records) - len(fresh))
    app[INVENTORY].upsert(f"gateway.{site}", {"kind": "gateway", "site": site}, source="tier", now=now)
    return web.json_response({"accepted": len(fresh), "duplicates": len(records) - len(fresh)})


def add_relay_routes(app: web.Application) -> None:
    app[LAST_BATCHES] = {}
    app.router.add_post(PATH, relay_batch)
