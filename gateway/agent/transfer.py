"""A download that survives a dropped link and a reboot (RFC 9110 ranges, section 14), and never
writes more than it was promised.

What is on disk is asked for again only from where it stops: ``Range: bytes=<have>-`` with
``If-Range: <ETag>`` (the gateway's strong ETag is the artifact's sha256), so a changed artifact
comes back whole (``200``) instead of being spliced onto old bytes. A ``503`` (the gateway is
still mirroring it) is :class:`Busy` with the ``Retry-After`` to wait. Bytes are written in a
worker thread: this runs on the same event loop as other devices in a demo, or beside an app.

Every body is bounded by the manifest's ``length``: a body (or a ``Content-Length``) that would
go past it is cut off, its partial removed, and refused. Before a byte is written the free space
of the state disk is checked; a disk that fills up anyway (``ENOSPC``) is :class:`DiskFull`, one
message, with the partial removed so the device's disk is not left full.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO

import aiohttp

from gateway.agent.errors import AgentError
from gateway.agent.poll import retry_after

CHUNK_BYTES = 64 << 10
_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-\d+|\*)/(\d+|\*)$")
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Busy(AgentError):
    """The gateway cannot serve it yet (503): try again after ``retry_after_s``."""

    def __init__(self, url: str, retry_after_s: float) -> None:
        super().__init__(f"{url}: not available yet, retry in {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


class DiskFull(AgentError):
    """The state disk has no room for the artifact; nothing of it is left on the disk."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(path: Path, offset: int) -> IO[bytes]:
    f = path.open("r+b" if offset else "wb", buffering=0)
    f.truncate(offset)
    f.seek(offset)
    return f


def _write(f: IO[bytes], chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:  # an unbuffered write may take fewer bytes than given
        view = view[f.write(view) or 0 :]


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _check_room(path: Path, need: int, url: str) -> None:
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise DiskFull(f"no room for {url} on {path.parent}: {need} more bytes needed, {free} free")


async def _cut(path: Path, why: str) -> AgentError:
    """The partial is removed (it holds bytes nobody promised); the error to raise."""
    await asyncio.to_thread(_discard, path)
    return AgentError(f"{why}; the partial download was removed")


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    length: int,
    etag: str | None,
    headers: Mapping[str, str],
    on_etag: Callable[[str], Awaitable[None]],
    stop_after: int | None = None,
) -> bool:
    """Fetch ``url`` (``length`` bytes, from the manifest) into ``dest``, resuming what is there
    when ``etag`` is known. True once the whole file is there; False when ``stop_after`` bytes came
    (a link drop, for tests and demos)."""
    have = await asyncio.to_thread(_size, dest)
    if have > length:
        await asyncio.to_thread(_discard, dest)
        have = 0
    await asyncio.to_thread(_check_room, dest, length - have, url)
    ask = dict(headers)
    if have and etag:
        ask["Range"], ask["If-Range"] = f"bytes={have}-", etag
    async with session.get(url, headers=ask) as r:
        if r.status == 503:
            raise Busy(url, retry_after(r.headers, 5.0))
        if r.status == 416:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if m and m.group(2) != "*" and int(m.group(2)) == have:
                return True  # it was all there already
            raise await _cut(dest, f"{url}: the partial file did not fit the artifact")
        if r.status == 200:
            have = 0
        elif r.status == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or m.group(1) is None or int(m.group(1)) != have:
                raise AgentError(
                    f"{url}: 206 for another range than asked ({r.headers.get('Content-Range')})"
                )
        else:
            raise AgentError(f"{url}: HTTP {r.status}")
        if r.content_length is not None and have + r.content_length > length:
            raise await _cut(
                dest, f"{url}: {have + r.content_length} bytes offered, longer than the manifest's {length}"
            )
        if new_etag := r.headers.get("ETag"):
            await on_etag(new_etag)  # kept before the bytes, so a reboot resumes
        return await _receive(r, dest, have, length, stop_after)


async def _receive(
    r: aiohttp.ClientResponse, dest: Path, have: int, length: int, stop_after: int | None
) -> bool:
    """The body into ``dest`` from ``have`` on, never past ``length``."""
    url = str(r.url)
    try:
        f = await asyncio.to_thread(_open, dest, have)
    except OSError as exc:
        raise await _disk_error(dest, url, exc) from exc
    got = 0
    try:
        async for chunk in r.content.iter_chunked(CHUNK_BYTES):
            if have + got + len(chunk) > length:
                break
            await asyncio.to_thread(_write, f, chunk)
            got += len(chunk)
            if stop_after is not None and got >= stop_after:
                return False  # the partial stays for the next try
        else:
            return have + got == length  # short (a clean end of a chunked body): resumed next try
    except OSError as exc:
        await asyncio.to_thread(f.close)
        raise await _disk_error(dest, url, exc) from exc
    finally:
        if not f.closed:
            await asyncio.to_thread(f.close)
    raise await _cut(dest, f"{url}: the body is longer than the manifest's {length} bytes")


async def _disk_error(dest: Path, url: str, exc: OSError) -> AgentError:
    await asyncio.to_thread(_discard, dest)
    if exc.errno in _NO_ROOM:
        return DiskFull(
            f"no room for {url} on {dest.parent} ({exc.strerror}); the partial download was removed"
        )
    return AgentError(f"cannot write {dest}: {exc.strerror}; the partial download was removed")
