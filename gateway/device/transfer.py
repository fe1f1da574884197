"""A download that survives a dropped link and a reboot (RFC 9110 ranges, section 14).

What is on disk is asked for again only from where it stops: ``Range: bytes=<have>-`` with
``If-Range: <ETag>`` (the gateway's strong ETag is the artifact's sha256), so a changed artifact
comes back whole (``200``) instead of being spliced onto old bytes. A ``503`` (the gateway is
still mirroring it) is :class:`Busy` with the ``Retry-After`` to wait. Bytes are written in a
worker thread: this runs on the same event loop as other devices in a demo, or beside an app.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO

import aiohttp

from gateway.device.errors import AgentError

CHUNK_BYTES = 64 << 10
_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-\d+|\*)/(\d+|\*)$")


class Busy(AgentError):
    """The gateway cannot serve it yet (503): try again after ``retry_after_s``."""

    def __init__(self, url: str, retry_after_s: float) -> None:
        super().__init__(f"{url}: not available yet, retry in {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


def retry_after(headers: Mapping[str, str], default_s: float) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", default_s)))
    except ValueError:
        return default_s  # an HTTP date: the plain interval is a fine answer


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(path: Path, offset: int) -> IO[bytes]:
    f = path.open("r+b" if offset else "wb")
    f.truncate(offset)
    f.seek(offset)
    return f


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    etag: str | None,
    headers: Mapping[str, str],
    on_etag: Callable[[str], Awaitable[None]],
    stop_after: int | None = None,
) -> bool:
    """Fetch ``url`` into ``dest``, resuming what is there when ``etag`` is known. True once the
    whole file is there; False when ``stop_after`` bytes came (a link drop, for tests and demos)."""
    have = await asyncio.to_thread(_size, dest)
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
            await asyncio.to_thread(_open(dest, 0).close)  # longer than the file: start again
            raise AgentError(f"{url}: the partial file did not fit the artifact; starting again")
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
        if new_etag := r.headers.get("ETag"):
            await on_etag(new_etag)  # kept before the bytes, so a reboot resumes
        f = await asyncio.to_thread(_open, dest, have)
        try:
            got = 0
            async for chunk in r.content.iter_chunked(CHUNK_BYTES):
                await asyncio.to_thread(f.write, chunk)
                got += len(chunk)
                if stop_after is not None and got >= stop_after:
                    return False  # the partial stays for the next try
        finally:
            await asyncio.to_thread(f.close)
    return True
