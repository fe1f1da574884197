"""Fetching an artifact that has a signed chunk list: every chunk verified as it lands.

The chunk list comes first and must match the digest in the signed index (else the artifact stops
with that reason: a :class:`~gateway.core.errors.FormatError`). Then the artifact streams in;
bytes are held in memory until a whole chunk is there, hashed, and only a chunk that matches its
digest is written to the partial file, in order: the partial never holds a byte outside a verified
chunk, and the store's :class:`~gateway.store.fill.Fill` tells waiting downloads how far that is.
A chunk that fails its digest is thrown away and fetched again from its own offset (a few times,
then the artifact is refused as bad data and tried again later).

Durability: after a chunk is written, the number of verified chunks goes into the partial's
metadata (data synced first, at most once a second). A resume after a ``kill -9`` re-hashes the
chunks already in the partial, the last recorded one included, while it rebuilds the whole-file
hash, keeps the leading ones that match and truncates the rest. The whole-file sha256 and the
signature are still checked by :mod:`gateway.mirror.fetch`, and decide ``verified``. Within one
run of the gateway, the bytes of a chunk not yet whole when a transfer is cut stay in memory, so a
flaky uplink that cuts more often than a chunk takes still makes progress; after a restart the
transfer resumes at the last verified chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from gateway.core.chunks import DIGEST_BYTES, Chunking, parse_list
from gateway.core.errors import DigestMismatchError, FormatError, LengthMismatchError, TransportError
from gateway.core.manifest import Deployment
from gateway.core.pacing import Progress
from gateway.core.progress import ProgressLog
from gateway.mirror.pace import Pacer
from gateway.mirror.upstream import Stream, Upstream
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import in_thread
from gateway.store.blobs import BlobStore
from gateway.store.fill import Fill, Fills

log = logging.getLogger(__name__)

MAX_CHUNK_REFETCHES = 3  # a chunk failing its digest this many times in a row: the artifact is bad
RECORD_EVERY_S = 1.0


class NoChunkList(Exception):
    """The upstream has no chunk list for this artifact (404: a static mirror without the file, or
    a parent gateway): the artifact is then fetched whole and verified before any byte is served."""


async def fetch_list(upstream: Upstream, dep: Deployment) -> tuple[Chunking, tuple[bytes, ...]]:
    """The chunk digests, checked against the signed index; FormatError names what is wrong."""
    assert dep.chunks is not None
    chunking = Chunking(dep.length, dep.chunks.size)
    raw = (await upstream.get(dep.chunks.url, max_bytes=chunking.count * DIGEST_BYTES + 64)).body
    try:
        return chunking, parse_list(raw, chunking, dep.chunks.sha256)
    except FormatError as exc:
        raise FormatError(f"{dep.key}: {exc}") from exc


def scan_partial(path: Path, chunking: Chunking, digests: tuple[bytes, ...]) -> tuple[int, Any]:
    """Re-hash the partial's chunks: how many lead it that match their digests (blocking), and the
    whole-file hash over them."""
    whole = hashlib.sha256()
    good = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0, whole
    with f:
        for i in range(chunking.count):
            want = chunking.chunk_length(i)
            data = f.read(want)
            if len(data) != want or hashlib.sha256(data).digest() != digests[i]:
                break
            whole.update(data)
            good += 1
    return good, whole


def _verify_write(blobs: BlobStore, f: Any, data: bytes, digest: bytes, whole: Any) -> bool:
    """Write ``data`` only if it is the chunk the list names (blocking)."""
    if hashlib.sha256(data).digest() != digest:
        return False
    blobs.append(f, data)
    whole.update(data)
    return True


def _record(blobs: BlobStore, f: Any, sha256: str, meta: dict[str, Any]) -> None:
    """Sync the chunks written, then say how many there are (blocking)."""
    os.fdatasync(f.fileno())
    blobs.save_partial_meta(sha256, meta)


class ChunkedDownload:
    """One artifact's transfer with its chunk list; :meth:`run` returns the bytes held and the
    whole-file hash."""

    def __init__(
        self,
        dep: Deployment,
        upstream: Upstream,
        blobs: BlobStore,
        fills: Fills,
        pace: Pacer,
        stats: Stats,
        tails: dict[str, tuple[int, bytes]],
        progress_log: ProgressLog | None = None,
    ) -> None:
        self.dep = dep
        self.progress_log = progress_log or ProgressLog()  # percent, rate and ETA lines
        self.upstream = upstream
        self.blobs = blobs
        self.fills = fills
        self.pace = pace  # the bandwidth cap and the uplink schedule
        self.stats = stats
        self.tails = tails  # sha256 -> (offset, the bytes of an unfinished chunk), across attempts

    async def run(self, meta: dict[str, Any], progress: Progress) -> tuple[int, Any]:
        dep = self.dep
        path = self.blobs.partial_path(dep.sha256)
        assert dep.chunks is not None
        # Devices asking from now on wait for verified chunks (or are cut off if the list is bad).
        fill = self.fills.begin(dep.sha256, path, Chunking(dep.length, dep.chunks.size), 0)
        try:
            chunking, digests = await fetch_list(self.upstream, dep)
        except TransportError as exc:
            if exc.status != 404:
                raise
            self.fills.fail(dep.sha256, "the upstream holds no chunk list")
            raise NoChunkList(f"{dep.key}: the upstream holds no chunk list ({dep.chunks.url})") from exc
        if meta:
            good, whole = await asyncio.to_thread(scan_partial, path, chunking, digests)
        else:
            good, whole = 0, hashlib.sha256()
        if meta.get("chunks_verified") not in (None, good):
            log.info(
                "%s: %d chunks verified again on resume (%s recorded)", dep.key, good, meta["chunks_verified"]
            )
        offset = chunking.verified_bytes(good)
        fill.advance(offset)
        progress.update(offset, time.monotonic())
        etag = meta.get("etag")
        refetches = 0
        while offset < dep.length:
            # The bytes of a chunk not yet whole when the last attempt was cut are kept in memory
            # (never on disk): the next request starts after them.
            at, tail = self.tails.pop(dep.sha256, (-1, b""))
            tail = tail if at == offset else b""
            stream = await self.upstream.stream(dep.artifact_url, offset=offset + len(tail), if_range=etag)
            try:
                if stream.start != offset + len(tail):  # the whole file came (changed, or no ranges)
                    offset, whole, tail = 0, hashlib.sha256(), b""
                    fill.advance(0)
                if stream.total is not None and stream.total != dep.length:
                    raise LengthMismatchError(
                        f"{dep.key}: upstream has {stream.total} bytes, the manifest says {dep.length}"
                    )
                etag = stream.etag
                offset, whole, bad = await self._receive(
                    stream, fill, digests, (offset, tail), whole, etag, progress
                )
            finally:
                await stream.close()
            if bad is None:
                break  # the stream ended: fetch.py checks the length
            refetches += 1
            self.stats.error("mirror.chunk_mismatches", f"{dep.key}: chunk {bad} failed its digest")
            log.warning(
                "%s: chunk %d failed its digest: fetching it again from byte %d", dep.key, bad, offset
            )
            if refetches > MAX_CHUNK_REFETCHES:
                raise DigestMismatchError(f"{dep.key}: chunk {bad} failed its digest {refetches} times")
        return offset, whole

    async def _receive(
        self,
        stream: Stream,
        fill: Fill,
        digests: tuple[bytes, ...],
        start: tuple[int, bytes],
        whole: Any,
        etag: str | None,
        progress: Progress,
    ) -> tuple[int, Any, int | None]:
        """Take the stream in, chunk by chunk; returns the new offset, the hash, and the number of a
        chunk that failed its digest (None: the stream ended)."""
        dep, chunking = self.dep, fill.chunking
        offset, tail = start
        meta = {"url": dep.artifact_url, "etag": etag, "length": dep.length, "chunk_size": chunking.size}
        await asyncio.to_thread(
            self.blobs.save_partial_meta, dep.sha256, {**meta, "chunks_verified": offset // chunking.size}
        )
        # Opened and closed in the loop (two fast syscalls): a cancellation between a worker
        # thread's open and our await would otherwise leak the file.
        f = self.blobs.open_partial(dep.sha256, offset)
        recorded = time.monotonic()
        buf = bytearray(tail)
        try:
            async for piece in stream.chunks():
                if offset + len(buf) + len(piece) > dep.length:
                    raise LengthMismatchError(f"{dep.key}: upstream sent more than {dep.length} bytes")
                await self.pace.take(len(piece))
                self.stats.inc("mirror.bytes", len(piece))
                buf += piece
                while offset < dep.length:
                    i = offset // chunking.size
                    need = chunking.chunk_length(i)
                    if len(buf) < need:
                        break
                    data = bytes(buf[:need])
                    del buf[:need]
                    if not await in_thread(_verify_write, self.blobs, f, data, digests[i], whole):
                        return offset, whole, i
                    offset += need
                    fill.advance(offset)
                    now = time.monotonic()
                    progress.update(offset, now)
                    if line := self.progress_log.report(dep.key, offset, dep.length, progress.rate_bps, now):
                        log.info(line)
                    if now - recorded >= RECORD_EVERY_S or offset == dep.length:
                        recorded = now
                        record = {**meta, "chunks_verified": chunking.chunks_within(offset)}
                        await in_thread(_record, self.blobs, f, dep.sha256, record)
            return offset, whole, None
        except BaseException:
            if buf:
                self.tails[dep.sha256] = (offset, bytes(buf))
            raise
        finally:
            f.close()
