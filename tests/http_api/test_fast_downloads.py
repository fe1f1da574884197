"""The fast download path (:mod:`gateway.http.fast_downloads`) says what the aiohttp handler says.

Every request is sent twice to a real gateway, on fresh connections: once whole in one write (the
fast path's case) and once with its head split over two writes 50 ms apart (a head that does not
arrive whole is aiohttp's). Status, headers (all but ``Date``) and body must be the same, over
seeded random ranges (single, several, suffix, open, past the end, malformed), preconditions that
match and that do not, ``Connection: close`` and credentials good, bad and missing. The
gateway's ``downloads.fast`` counter shows the fast path answered the whole-head half.

Then what a connection does over its life: downloads then a poll then downloads again on one
keep-alive connection, two heads in one write, a client gone mid-range (no descriptor kept), and
an idle keep-alive connection closed after ``http.idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import random
import socket
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until

MODEL = os.urandom(3 << 20)  # bigger than a loopback socket's starting buffer: some ranges wait to drain
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"
TOKEN = "token-of-cam-1"
IDLE_S = 1.5
Response = tuple[str, list[tuple[str, str]], bytes]  # status line, headers in order, body


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    reg.publish(MODEL)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"cam-1": TOKEN}))
    settings = gateway_settings(
        reg, tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tokens)},
        http={"listen": "127.0.0.1:0", "idle_timeout_s": IDLE_S},
    )  # fmt: skip
    async with running(settings) as g:
        await until(lambda: g.store.is_verified(SHA), what="artifact mirrored")
        yield g


def address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.http_addresses[0][:2]
    return host, port


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    status, *lines = head[:-4].split("\r\n")
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return status, headers, body


async def ask(gw: Gateway, request: bytes, *, split: bool) -> Response:
    reader, writer = await asyncio.open_connection(*address(gw))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if split:
            writer.write(request[:9])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(request[9:])
        else:
            writer.write(request)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def random_request(rng: random.Random, last_modified: str) -> bytes:
    size = len(MODEL)
    host = rng.choice(["gw", "gw:8080", "127.0.0.1:1", "[::1]:8080", "gw", None, "twice", "a b"])
    headers = [] if host is None else ["Host: gw", "Host: gw"] if host == "twice" else [f"Host: {host}"]
    auth = rng.choice(["good"] * 6 + ["bad", "none", "basic"])
    if auth == "good":
        headers.append(f"Authorization: Bearer {TOKEN}")
    elif auth == "bad":
        headers.append("Authorization: Bearer nope")
    elif auth == "basic":
        headers.append("Authorization: Basic " + base64.b64encode(f"cam-1:{TOKEN}".encode()).decode())
    a, b = sorted(rng.randrange(size) for _ in range(2))
    ranges = [
        f"bytes={a}-{b}", f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{rng.randint(1, size)}",
        f"bytes={size}-{size + 5}", f"bytes={a}-{b},{b + 1}-", "bytes=0-0,-1", "bytes=x-y", "items=0-5",
        f"bytes={b}-{a}" if a != b else "bytes=5-1", None, None,
    ]  # fmt: skip
    if (r := rng.choice(ranges)) is not None:
        headers.append(f"Range: {r}")
    condition = rng.choice([None] * 6 + ["if-range-tag", "if-range-old", "if-range-date", "inm", "ims", "im"])
    if condition == "if-range-tag":
        headers.append(f'If-Range: "{SHA}"')
    elif condition == "if-range-old":
        headers.append('If-Range: "0000"')
    elif condition == "if-range-date":
        headers.append(f"If-Range: {last_modified}")
    elif condition == "inm":
        headers.append(f'If-None-Match: "{SHA}"')
    elif condition == "ims":
        headers.append(f"If-Modified-Since: {formatdate(0, usegmt=True)}")
    elif condition == "im":
        headers.append('If-Match: "other"')
    if rng.random() < 0.2:
        headers.append("Connection: close")
    rng.shuffle(headers)
    return ("\r\n".join([f"GET {PATH} HTTP/1.1", *headers]) + "\r\n\r\n").encode()


def comparable(response: Response) -> Response:
    """Without ``Date``, and with a multipart answer's random boundary replaced by one name."""
    status, headers, body = response
    kept = sorted((k, v) for k, v in headers if k.lower() != "date")
    boundary = next((v.split("boundary=")[1] for k, v in kept if "boundary=" in v), None)
    if boundary is not None:
        kept = [(k, v.replace(boundary, "BOUNDARY")) for k, v in kept]
        body = body.replace(boundary.encode(), b"BOUNDARY")
    return status, kept, body


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in range(1, 6))])
async def test_the_fast_path_answers_what_the_handler_answers(gw: Gateway, seed: int) -> None:
    rng = random.Random(seed)
    _, headers, _ = await ask(
        gw, f"GET {PATH} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(), split=True
    )
    last_modified = dict(headers)["Last-Modified"]
    fast_before = gw.stats["downloads.fast"]
    for _ in range(80):
        request = random_request(rng, last_modified)
        fast_then = gw.stats["downloads.fast"]
        slow = await ask(gw, request, split=True)
        assert gw.stats["downloads.fast"] == fast_then, "the split head went to aiohttp"
        quick = await ask(gw, request, split=False)
        assert comparable(quick) == comparable(slow), request
        code, content_type = quick[0].split()[1], dict(quick[1]).get("Content-Type", "")
        single = code == "200" or (code == "206" and "multipart" not in content_type)
        if single and code == "206":
            first, last = (
                int(x) for x in dict(quick[1])["Content-Range"].split()[1].split("/")[0].split("-")
            )
            assert quick[2] == MODEL[first : last + 1]
        elif single:
            assert quick[2] == MODEL
        credential = b"Authorization" in request and b"nope" not in request
        one_host = request.count(b"Host: ") == 1 and b"Host: a b" not in request
        assert gw.stats["downloads.fast"] == fast_then + (single and credential and one_host), request
    assert gw.stats["downloads.fast"] - fast_before >= 10  # the mix gives the fast path a share


async def test_one_connection_downloads_then_polls_then_downloads(gw: Gateway) -> None:
    reader, writer = await asyncio.open_connection(*address(gw))
    auth = f"Host: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
    try:
        for first in (0, 1000, 2_000_000):
            writer.write(
                f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes={first}-{first + 99_999}\r\n\r\n".encode()
            )
            status, _, body = await read_response(reader)
            assert status == "HTTP/1.1 206 Partial Content" and body == MODEL[first : first + 100_000]
        writer.write(f"GET /devices/cam-1/updates?model=detector HTTP/1.1\r\n{auth}\r\n".encode())
        status, _, _ = await read_response(reader)
        assert status.split()[1] in ("200", "204")
        # two heads in one write, after the poll (aiohttp's connection now) and pipelined
        writer.write(f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=0-9\r\n\r\n".encode() * 2)
        for _ in range(2):
            status, _, body = await read_response(reader)
            assert status.split()[1] == "206" and body == MODEL[:10]
    finally:
        writer.close()


async def test_two_heads_in_one_write_are_both_answered_in_order(gw: Gateway) -> None:
    reader, writer = await asyncio.open_connection(*address(gw))
    auth = f"Host: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
    try:
        writer.write(f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=0-9\r\n\r\n".encode())
        assert (await read_response(reader))[2] == MODEL[:10]  # fast
        # a whole head, then while its 2 MB go out, a second one: held, answered after
        writer.write(f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=0-1999999\r\n\r\n".encode())
        writer.write(f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=5-14\r\n\r\n".encode())
        assert (await read_response(reader))[2] == MODEL[:2_000_000]
        assert (await read_response(reader))[2] == MODEL[5:15]
    finally:
        writer.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def publish_big(gw: Gateway, reg: Registry) -> tuple[bytes, bytes]:
    """A 16 MB artifact (more than the kernel buffers on both sides of a loopback connection, so
    its sends wait for the reader) and a whole-file request for it."""
    big = os.urandom(16 << 20)
    reg.publish(big, model_id="big")
    await until(lambda: gw.store.is_verified(hashlib.sha256(big).hexdigest()), what="big mirrored")
    path = "/artifacts/big/1.0.0/big-1.0.0.bin"
    return big, f"GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()


async def small_window_connection(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose receive buffer is small from the start, so the gateway's sends must wait."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address(gw))
    return await asyncio.open_connection(sock=sock, limit=1 << 16)


@pytest.mark.parametrize("seed", range(2))
async def test_clients_gone_mid_download_leave_nothing_open(gw: Gateway, reg: Registry, seed: int) -> None:
    """Devices that vanish at random points of a download (the gateway waiting for their socket
    to drain), resetting or half-closing their connection, leave no descriptor open: neither
    their sockets nor the blob, which closes once its hold is up and no download uses it."""
    rng = random.Random(seed)
    big, request = await publish_big(gw, reg)
    before = open_descriptors()
    for _ in range(10):
        reader, writer = await small_window_connection(gw)
        writer.write(request)
        await reader.readexactly(rng.randint(1, 4 << 20))
        await asyncio.sleep(rng.uniform(0, 0.05))
        if rng.random() < 0.5:
            writer.transport.abort()  # a reset: the gateway's next send fails
        else:
            writer.write_eof()  # a half-close: the gateway closes the connection while it waits
            await asyncio.sleep(rng.uniform(0, 0.05))
            writer.transport.abort()
    reader, writer = await asyncio.open_connection(*address(gw))
    writer.write(request)
    status, _, body = await read_response(reader)
    writer.close()
    assert status.split()[1] == "200" and body == big
    await until(
        lambda: open_descriptors() <= before, what="the connections' and the blob's descriptors closed"
    )


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(gw: Gateway) -> None:
    reader, writer = await asyncio.open_connection(*address(gw))
    request = f"GET {PATH} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nRange: bytes=0-9\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):  # kept open while it asks within the timeout
            writer.write(request)
            assert (await read_response(reader))[2] == MODEL[:10]
            await asyncio.sleep(IDLE_S / 3)
        t0 = loop.time()
        assert await asyncio.wait_for(reader.read(), IDLE_S * 4) == b""  # closed by the gateway
        assert IDLE_S * 0.6 <= loop.time() - t0 <= IDLE_S * 3
    finally:
        writer.close()


async def test_a_slow_download_outlives_the_idle_timeout(gw: Gateway, reg: Registry) -> None:
    """A device reading slowly keeps its connection however long the download takes: the idle
    timeout counts from the last answer, and aiohttp's own timer (which thinks the connection
    idle) is not left to cut it. The file is bigger than what the kernel buffers on both sides."""
    big, request = await publish_big(gw, reg)
    loop = asyncio.get_running_loop()
    reader, writer = await small_window_connection(gw)
    try:
        t0 = loop.time()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        body = bytearray()
        while len(body) < len(big):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
            assert chunk, f"cut after {len(body)} bytes, {loop.time() - t0:.1f} s"
            body += chunk
            await asyncio.sleep(IDLE_S * 2.5 / (len(big) >> 16))
        assert body == big
        assert loop.time() - t0 > IDLE_S * 2
    finally:
        writer.close()


async def test_a_kernel_that_refuses_sendfile_leaves_downloads_to_the_read_path(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel will not ``sendfile`` a blob (a file system without it), the download the
    fast path had started is cut (its head may be out: the device resumes with ``Range``) and
    every download after it, on any connection, is read and written through aiohttp's path, whole
    and right. Mocked: no file system this test can use refuses ``sendfile``, so ``os.sendfile``
    raising EINVAL, as the kernel does there, stands in for it."""

    def refuse(*_args: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", refuse)
    auth = f"Host: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
    first = f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=0-99999\r\n\r\n".encode()
    fast_before = gw.stats["downloads.fast"]
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await ask(gw, first, split=False)  # cut: never a short answer
    for request, want in [
        (f"GET {PATH} HTTP/1.1\r\n{auth}\r\n".encode(), ("200", MODEL)),
        (first, ("206", MODEL[:100_000])),
        (f"GET {PATH} HTTP/1.1\r\n{auth}Range: bytes=2000000-\r\n\r\n".encode(), ("206", MODEL[2_000_000:])),
    ]:
        for split in (False, True):
            status, _, body = await ask(gw, request, split=split)
            assert (status.split()[1], body) == want
    assert gw.stats["downloads.fast"] == fast_before
