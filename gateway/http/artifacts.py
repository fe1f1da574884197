"""Downloads: ``GET``/``HEAD /artifacts/{model_id}/{version}/{file}`` and the same path plus ``.sig``.

The URL names a (model, version, file) triple; the store maps it, in memory, to a verified blob.
The URL never becomes a file path: any part that is not a plain id or file name is a 404 that says
nothing more, so ``..``, ``%2e%2e``, absolute paths, odd encodings and symlinks reach no file.
Blobs are opened with ``O_NOFOLLOW`` and checked to be regular files of the verified size.

Conditional and range logic is :mod:`gateway.http.ranges` (pure); this shell takes the blob held
open with its headers built once (:mod:`gateway.http.open_blobs`: checked against what was
verified before every use), writes the head and hands the bytes to ``sendfile(2)``
(:mod:`gateway.http.sendfile`; through Python only over TLS). aiohttp's own ``FileResponse`` is
not used: it answers 206 to an ``If-Range`` whose tag no longer matches and 416 to an unknown range
unit, and opens the file for every request.

While an artifact of a deployment in effect is still arriving and has a signed chunk list, a
download is answered at once (200 or 206, ``Content-Length`` from the manifest): the bytes inside
verified chunks are sent from the partial file, and the response waits (each wait bounded by
:data:`STREAM_WAIT_S`) for the mirror to verify the next chunk. Never a byte past the verified
chunks; if the mirror fails for good, or nothing is verified for that long, the connection is cut
and the device resumes later with ``Range``. Until the whole file is verified there is no ``ETag``
or ``Last-Modified``, and a request with ``If-Range`` gets the whole representation (no validator
of ours can match yet). Several ranges at once are not streamed: 503.

An artifact without a chunk list (or when the store cannot take it) answers 503 with a
``Retry-After`` that follows the fill's expected finish (the store computes it), so the waiting
devices come back when it should be ready instead of in a storm.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import stat
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway.core.manifest import valid_id
from gateway.http import sendfile
from gateway.http.context import STATS
from gateway.http.devices import authorize_any
from gateway.http.open_blobs import BOUNDARY_LEN, OpenBlob, OpenBlobs, part_head
from gateway.http.ranges import ByteRange, plan
from gateway.store.fill import Fill
from gateway.store.lookup import ArtifactLookup, Pending, Streaming, Verified

log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_HASHED = re.compile(r"^([0-9a-f]{64})\.(.+)$")
STREAM_WAIT_S = 60.0  # a streaming download waits this long at most for the next verified chunk
PUBLISH_WAIT_S = 10.0  # a fully verified fill is being published: a download waits this long for it


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound(text="no such artifact\n")


def valid_parts(model_id: str, version: str, filename: str) -> bool:
    return (
        valid_id(model_id)
        and valid_id(version)
        and _FILENAME.match(filename) is not None
        and ".." not in filename
    )


def _open_partial(fill: Fill) -> IO[bytes] | None:
    """Open the partial file being filled (not following links); None unless a regular file."""
    try:
        fd = os.open(fill.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        return None
    return f


def lookup_artifact(
    store: ArtifactLookup, model_id: str, version: str, filename: str
) -> Verified | Streaming | Pending | None:
    """The store's answer; a TUF consistent-snapshot name ``<sha256>.<file>`` (what python-tuf
    clients download) is the same artifact when its digest is that one."""
    found = store.lookup(model_id, version, filename)
    hashed = _HASHED.match(filename) if found is None else None
    if hashed is None:
        return found
    found = store.lookup(model_id, version, hashed.group(2))
    if isinstance(found, Verified) and found.sha256 != hashed.group(1):
        return None
    return found


async def download(request: web.Request) -> web.StreamResponse:
    """``GET``/``HEAD /artifacts/{model_id}/{version}/{filename}``."""
    store, stats = request.app[ARTIFACTS], request.app[STATS]
    m = request.match_info
    model_id, version, filename = m["model_id"], m["version"], m["filename"]
    if not valid_parts(model_id, version, filename):
        raise _not_found()
    await authorize_any(request)
    found = lookup_artifact(store, model_id, version, filename)
    # Every chunk verified: the whole file is being checked and moved into place (its partial
    # may already be gone). Served as the verified blob once it is published.
    if (
        isinstance(found, Streaming)
        and found.fill.verified >= found.fill.length
        and await found.fill.settled(PUBLISH_WAIT_S)
    ):
        found = lookup_artifact(store, model_id, version, filename)
    if found is None:
        raise _not_found()
    if isinstance(found, Pending):
        stats.inc("downloads.unavailable")
        raise web.HTTPServiceUnavailable(
            text="artifact is being mirrored and verified; retry later\n",
            headers={"Retry-After": str(found.retry_after_s)},
        )
    if isinstance(found, Streaming):
        return await _stream(request, found)
    blobs = request.app[BLOBS]
    blob = await blobs.acquire(found)
    if blob is None:
        # Gone, short or changed since it was verified: the store stops serving it, hashes it
        # again and takes it back or fetches it again; the device comes back meanwhile.
        log.warning("verified blob %s is not the file that was verified: not served", found.path)
        retry_after_s = store.broken(model_id, version, filename)
        stats.inc("downloads.unavailable")
        raise web.HTTPServiceUnavailable(
            text="artifact temporarily unavailable\n", headers={"Retry-After": str(retry_after_s)}
        )
    try:
        return await _answer(request, blob)
    finally:
        blobs.release(blob)


async def _answer(request: web.Request, blob: OpenBlob) -> web.StreamResponse:
    found = blob.found
    decided = plan(
        request.method,
        request.headers,
        size=found.size,
        etag=found.sha256,
        last_modified=found.mtime,
        part_head=blob.part_head_len,
    )
    headers = dict(blob.headers)  # built once per blob (open_blobs)
    if decided.status in (304, 412):
        del headers["Content-Type"]
        return web.Response(status=decided.status, headers=headers)
    if decided.status == 416:
        del headers["Content-Type"]
        headers["Content-Range"] = f"bytes */{found.size}"
        return web.Response(status=416, headers=headers, text="range not satisfiable\n")
    if decided.status == 200:
        headers["Content-Length"] = str(found.size)
        resp = web.StreamResponse(status=200, headers=headers)
        return await _send(request, resp, blob, [(b"", ByteRange(0, found.size - 1))])
    if len(decided.ranges) == 1:
        (only,) = decided.ranges
        headers["Content-Range"] = only.content_range(found.size)
        headers["Content-Length"] = str(only.length)
        resp = web.StreamResponse(status=206, headers=headers)
        return await _send(request, resp, blob, [(b"", only)])
    # multipart/byteranges (RFC 9110 14.6): each part is a header block then the bytes.
    boundary = secrets.token_hex(BOUNDARY_LEN // 2)
    parts = [
        (part_head(boundary, found.content_type, r.content_range(found.size)), r) for r in decided.ranges
    ]
    closing = f"\r\n--{boundary}--\r\n".encode()
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    headers["Content-Length"] = str(sum(len(h) + r.length for h, r in parts) + len(closing))
    resp = web.StreamResponse(status=206, headers=headers)
    return await _send(request, resp, blob, parts, closing)


async def _send(
    request: web.Request,
    resp: web.StreamResponse,
    blob: OpenBlob,
    parts: list[tuple[bytes, ByteRange]],
    closing: bytes = b"",
) -> web.StreamResponse:
    """The head, then each part's bytes with sendfile (the head held back to leave with them)."""
    transport = request.transport
    sock = sendfile.plain_socket(transport)
    sendfile.cork(sock, True)
    try:
        writer = await resp.prepare(request)
        if request.method == "HEAD" or writer is None:
            await resp.write_eof()
            return resp
        for head, r in parts:
            if r.length <= 0:
                continue
            if head:
                await resp.write(head)
            sent = await sendfile.send_range(transport, sock, resp, blob.file, r.first, r.length)
            request.app[STATS].inc("downloads.bytes", sent)
            if sent < r.length:  # truncated while streaming: cut the connection, never a short 200
                raise ConnectionResetError("blob shorter than verified")
        if closing:
            await resp.write(closing)
        await resp.write_eof()
    finally:
        sendfile.cork(sock, False)
    return resp


async def _stream(request: web.Request, found: Streaming) -> web.StreamResponse:
    """A download of an artifact still arriving: what is verified now, the rest as it is."""
    fill = found.fill
    size = fill.length
    # No whole-file validator exists yet: If-Range cannot match (RFC 9110 13.1.5: send the
    # whole representation), and the other preconditions have nothing to compare with.
    asked = {"Range": r} if (r := request.headers.get("Range")) and "If-Range" not in request.headers else {}
    decided = plan(request.method, asked, size=size, etag='"', last_modified=0.0)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store, no-transform"}
    if decided.status == 416:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers, text="range not satisfiable\n")
    if len(decided.ranges) > 1:
        request.app[STATS].inc("downloads.unavailable")
        raise web.HTTPServiceUnavailable(
            text="several ranges at once are served once the artifact is verified; retry later\n",
            headers={"Retry-After": str(found.retry_after_s)},
        )
    span = decided.ranges[0] if decided.ranges else ByteRange(0, size - 1)
    f = await asyncio.get_running_loop().run_in_executor(None, _open_partial, fill)
    if f is None:
        request.app[STATS].inc("downloads.unavailable")
        raise web.HTTPServiceUnavailable(
            text="artifact is being mirrored and verified; retry later\n",
            headers={"Retry-After": str(found.retry_after_s)},
        )
    try:
        resp = web.StreamResponse(status=decided.status, headers=headers)
        resp.content_type = found.content_type
        resp.content_length = span.length
        if decided.status == 206:
            resp.headers["Content-Range"] = span.content_range(size)
        writer = await resp.prepare(request)
        if request.method == "HEAD" or writer is None or span.length <= 0:
            await resp.write_eof()
            return resp
        if not await _stream_span(request, resp, writer, fill, f, span):
            # Cut off (the mirror failed, or stalled): the device resumes later with Range.
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp
    finally:
        f.close()


async def _stream_span(
    request: web.Request,
    resp: web.StreamResponse,
    writer: AbstractStreamWriter,
    fill: Fill,
    f: IO[bytes],
    span: ByteRange,
) -> bool:
    """Send ``span`` as its chunks are verified; False when it has to be cut off."""
    pos, end = span.first, span.last + 1
    while pos < end:
        if fill.verified <= pos and not await fill.wait_past(pos, STREAM_WAIT_S):
            return False
        if fill.failed is not None:
            return False
        upto = min(end, fill.verified)
        await _send_bytes(request, resp, writer, f, ByteRange(pos, upto - 1))
        pos = upto
    return True


async def _send_bytes(
    request: web.Request,
    resp: web.StreamResponse,
    writer: AbstractStreamWriter,
    f: IO[bytes],
    r: ByteRange,
) -> None:
    await writer.drain()
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    try:
        sent = await asyncio.get_running_loop().sendfile(transport, f, r.first, r.length)
    except NotImplementedError:
        sent = await sendfile.copy_range(resp, f, r.first, r.length)
    request.app[STATS].inc("downloads.bytes", sent)
    if sent < r.length:
        raise ConnectionResetError("partial file shorter than its verified chunks")


ARTIFACTS: web.AppKey[ArtifactLookup] = web.AppKey("artifacts")  # the store, as downloads see it
BLOBS: web.AppKey[OpenBlobs] = web.AppKey("open_blobs", OpenBlobs)  # verified blobs held open


async def _close_blobs(app: web.Application) -> None:
    await app[BLOBS].aclose()


def add_artifact_routes(app: web.Application, store: ArtifactLookup) -> None:
    """Downloads, with the device credentials of :func:`gateway.http.devices.authorize_any`."""
    app[ARTIFACTS] = store
    app[BLOBS] = OpenBlobs()
    app.on_cleanup.append(_close_blobs)
    # {filename:.+} would let a slash through to our validation; a plain segment never matches one.
    app.router.add_get("/artifacts/{model_id}/{version}/{filename}", download)
