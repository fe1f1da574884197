"""Sending a byte range of an open file to an HTTP client: ``sendfile(2)`` where the kernel can.

On a plain TCP connection the bytes go from the page cache to the socket with ``os.sendfile``,
never through Python. The first call is made at once, from the handler: a 1 MiB range usually fits
the socket's buffer, so it costs one system call and no trip through the event loop (asyncio's
``loop.sendfile`` always waits for one, and pauses and resumes reading and registers and removes a
writer around it: four ``epoll_ctl`` calls per response). What does not fit is left to
``loop.sendfile``, which waits for the socket to drain.

:func:`corked` holds the response head in the kernel (``TCP_CORK``, what nginx's ``tcp_nopush``
does) until the body follows, so head and body leave in full segments instead of a small packet
for the head first.

TLS cannot use ``sendfile`` (the bytes are encrypted in user space): there, and wherever the kernel
refuses, the range is read with ``os.pread`` off the loop, 1 MiB at a time, and written through
the response. Every read names its offset, so many downloads can share one open file.

What it leaves to others: which bytes may be sent (the caller sends only verified ones), the
response head (aiohttp), counting.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from aiohttp import web

CHUNK = 1 << 20  # bytes read per step where the bytes pass through Python (TLS)


def plain_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The connection's socket when the kernel can send a file into it (TCP without TLS)."""
    if transport is None or transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


@contextmanager
def corked(sock: socket.socket | None) -> Iterator[None]:
    """Hold partial segments while the head and body are written; push them out after."""
    if sock is None or not hasattr(socket, "TCP_CORK"):
        yield
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except OSError:  # the connection is gone: the writes that follow say so
        yield
        return
    try:
        yield
    finally:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        except OSError:
            pass


async def send_range(
    request: web.Request, resp: web.StreamResponse, file: IO[bytes], offset: int, count: int
) -> int:
    """Send ``count`` bytes of ``file`` from ``offset`` after what ``resp`` has written; returns the
    bytes sent (fewer only when the file is shorter). Raises ConnectionResetError when the
    connection is gone."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost")
    sock = plain_socket(transport)
    if sock is None:
        return await copy_range(resp, file, offset, count)
    sent = 0
    if transport.get_write_buffer_size() == 0:  # nothing queued ahead of the body: straight in
        try:
            sent = os.sendfile(sock.fileno(), file.fileno(), offset, count)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionResetError("connection lost") from exc
        except OSError:  # the kernel will not send this file into this socket: read it instead
            return await copy_range(resp, file, offset, count)
        else:
            if sent == count or sent == 0:  # all of it, or the file ends at offset (0 is end of file)
                return sent
    if transport.is_closing():
        raise ConnectionResetError("connection lost")
    try:
        more = await asyncio.get_running_loop().sendfile(
            transport, file, offset + sent, count - sent, fallback=False
        )
    except (asyncio.SendfileNotAvailableError, NotImplementedError):
        more = await copy_range(resp, file, offset + sent, count - sent)
    return sent + more


async def copy_range(resp: web.StreamResponse, file: IO[bytes], offset: int, count: int) -> int:
    """The range through Python: positioned reads off the loop, written through the response."""
    loop = asyncio.get_running_loop()
    left = count
    while left > 0:
        chunk = await loop.run_in_executor(None, os.pread, file.fileno(), min(CHUNK, left), offset)
        if not chunk:
            break
        await resp.write(chunk)
        offset += len(chunk)
        left -= len(chunk)
    return count - left
