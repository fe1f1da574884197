"""A response head sent with ``MSG_MORE`` and its body with ``sendfile`` arrive whole and in order.

Real loopback connections: the server writes a head with :func:`gateway.http.sendfile.send_head`
and a file range with ``first_push`` and ``rest``, the client reads to the end of the stream. The
head ranges from a few bytes to more than the socket takes at once (then part of it waits in the
transport and the body must wait behind it), the client reads at once or only after a pause (the
body then goes out as the socket drains), and the socket may be one ``send_head`` cannot pass
``MSG_MORE`` to (all of the head through the transport).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import IO, cast

import pytest

from gateway.http import sendfile

BODY = os.urandom(3 << 20)


class Opaque:
    """A socket as another event loop may hand it out: a descriptor and options, no ``send``."""

    def __init__(self, sock: socket.socket) -> None:
        self._inner = sock

    def fileno(self) -> int:
        return self._inner.fileno()


async def exchange(
    file: IO[bytes], head: bytes, offset: int, count: int, *, pause_s: float, raw: bool
) -> bytes:
    loop = asyncio.get_running_loop()
    sent_all: asyncio.Future[int] = loop.create_future()
    tasks: list[asyncio.Task[None]] = []

    async def answer(transport: asyncio.Transport, sock: socket.socket) -> None:
        sendfile.send_head(transport, sock, head)
        sent, finished = sendfile.first_push(transport, sock, file, offset, count)
        if not finished:
            sent = await sendfile.rest(transport, sock, file, offset, count, sent)
        transport.close()
        sent_all.set_result(sent)

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            tasks.append(
                loop.create_task(answer(transport, sock if raw else cast(socket.socket, Opaque(sock))))
            )

    server = await loop.create_server(Server, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        await asyncio.sleep(pause_s)
        received = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert await sent_all == count
        return received
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("head_len", [1, 300, 100_000, 1 << 20])
@pytest.mark.parametrize("pause_s", [0.0, 0.3])
@pytest.mark.parametrize("raw", [True, False])
async def test_head_then_body_arrive_whole_and_in_order(
    tmp_path: Path, head_len: int, pause_s: float, raw: bool
) -> None:
    path = tmp_path / "blob"
    path.write_bytes(BODY)
    head = bytes(i % 251 for i in range(head_len))
    offset, count = 12_345, (1 << 20) + 7
    with path.open("rb") as f:
        received = await exchange(f, head, offset, count, pause_s=pause_s, raw=raw)
    assert len(received) == head_len + count
    assert received == head + BODY[offset : offset + count]
