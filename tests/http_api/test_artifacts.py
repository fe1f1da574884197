"""Downloads from a real gateway over real HTTP: aiohttp client, raw sockets and curl."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from email import message_from_bytes
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.mirror.hostile import Fault, Hostile
from tests.peers import need

MODEL = os.urandom(2_000_000)
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as g:
        await until(lambda: g.store.is_verified(SHA), what="artifact mirrored")
        yield g


async def get(
    gw: Gateway, path: str = PATH, method: str = "GET", **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, base_url(gw) + path, headers=headers, auto_decompress=False) as r,
    ):
        return r.status, r.headers.copy(), await r.read()


async def raw(gw: Gateway, request: bytes) -> bytes:
    host, port = gw.http_addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


async def test_whole_file_head_and_signature(gw: Gateway, reg: Registry) -> None:
    status, headers, body = await get(gw)
    assert status == 200
    assert body == MODEL
    assert headers["ETag"] == f'"{SHA}"'
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = await get(gw, method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["Content-Length"] == str(len(MODEL))
    status, _, sig = await get(gw, PATH + ".sig")
    assert status == 200
    assert sig == (reg.root / "artifacts/detector/1.0.0/detector-1.0.0.bin.sig").read_bytes()


async def test_ranges_and_conditionals(gw: Gateway) -> None:
    status, headers, body = await get(gw, Range="bytes=100-199")
    assert (status, body) == (206, MODEL[100:200])
    assert headers["Content-Range"] == f"bytes 100-199/{len(MODEL)}"
    status, _, body = await get(gw, Range="bytes=-10")
    assert (status, body) == (206, MODEL[-10:])
    status, headers, _ = await get(gw, Range=f"bytes={len(MODEL)}-")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(MODEL)}"
    status, _, body = await get(gw, Range="lines=1-2")
    assert (status, body) == (200, MODEL)
    status, _, body = await get(gw, **{"If-None-Match": f'"{SHA}"'})
    assert (status, body) == (304, b"")
    status, _, body = await get(gw, Range="bytes=10-", **{"If-Range": f'"{SHA}"'})
    assert (status, body) == (206, MODEL[10:])
    status, _, body = await get(gw, Range="bytes=10-", **{"If-Range": '"an-older-version"'})
    assert (status, body) == (200, MODEL)


async def test_multipart_byteranges_is_well_formed(gw: Gateway) -> None:
    status, headers, body = await get(gw, Range="bytes=0-9,1000-1009,-5")
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(headers["Content-Length"]) == len(body)
    msg = message_from_bytes(b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body)
    parts = [(part["Content-Range"], part.get_payload(decode=True)) for part in msg.get_payload()]
    n = len(MODEL)
    assert parts == [
        (f"bytes 0-9/{n}", MODEL[0:10]),
        (f"bytes 1000-1009/{n}", MODEL[1000:1010]),
        (f"bytes {n - 5}-{n - 1}/{n}", MODEL[-5:]),
    ]
    status, _, body = await get(gw, Range="bytes=" + ",".join(["0-"] * 60))
    assert (status, len(body)) == (200, len(MODEL))  # never the body 60 times


@pytest.mark.parametrize(
    "target",
    [
        "/artifacts/../../etc/passwd",
        "/artifacts/%2e%2e/1.0.0/detector-1.0.0.bin",
        "/artifacts/detector/%2e%2e/detector-1.0.0.bin",
        "/artifacts/detector/1.0.0/..%2f..%2fcatalog.json",
        "/artifacts/detector/1.0.0/%2fetc%2fpasswd",
        "/artifacts/detector/1.0.0/detector-1.0.0.bin%00",
        "/artifacts/detector/1.0.0/%c0%ae%c0%ae",
        "/artifacts//etc/passwd/x",
        "/artifacts/detector/1.0.0/other.bin",
        "/artifacts/detector/9.9.9/detector-1.0.0.bin",
    ],
)
async def test_path_tricks_are_plain_404(gw: Gateway, target: str) -> None:
    reply = await raw(gw, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"404", b"400"), status_line
    assert b"root:" not in reply
    assert str(gw.data).encode() not in reply


@pytest.mark.parametrize(
    ("value", "status", "header"),
    [
        # a valid range whose last-pos is past the end: clamped to the length (RFC 9110 14.1.2)
        (b"bytes=0-" + b"9" * 4000, 206, b"Content-Range: bytes 0-1999999/2000000"),
        # the README: more than 20 overlapping ranges, or a Range that does not parse, is the whole file
        (b"bytes=" + b",".join(b"%d-%d" % (i, i + 5) for i in range(60)), 200, b"Content-Length: 2000000"),
        ("bytes=\u0661-\u0662".encode(), 200, b"Content-Length: 2000000"),  # digits of another script
        (b"bytes=-", 200, b"Content-Length: 2000000"),
        (b"bytes=0-1,\xff\xfe", 200, b"Content-Length: 2000000"),
    ],
    ids=["huge-last-pos", "60-ranges", "arabic-digits", "bare-dash", "raw-bytes"],
)
async def test_hostile_range_headers_get_the_promised_answer(
    gw: Gateway, value: bytes, status: int, header: bytes
) -> None:
    reply = await raw(
        gw,
        b"GET "
        + PATH.encode()
        + b" HTTP/1.1\r\nHost: x\r\nRange: "
        + value
        + b"\r\nConnection: close\r\n\r\n",
    )
    head = reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert int(head[0].split()[1]) == status, head[0]
    assert header in head
    assert not any(h.lower().startswith(b"content-type: multipart") for h in head)


async def test_a_blob_replaced_by_a_symlink_is_not_served(gw: Gateway, tmp_path: Path) -> None:
    blob = gw.store.blobs.blob_path(SHA)
    target = tmp_path / "elsewhere"
    target.write_bytes(MODEL)
    blob.unlink()
    blob.symlink_to(target)
    status, headers, _ = await get(gw)
    assert status == 503
    assert "Retry-After" in headers


async def test_curl_resumes_an_interrupted_download(gw: Gateway, tmp_path: Path) -> None:
    curl = need("curl")
    out = tmp_path / "model.bin"
    url = base_url(gw) + PATH
    # The interrupted transfer: a client that reads 700 kB of the body and drops the connection.
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        out.write_bytes(await r.content.readexactly(700_000))
    assert out.stat().st_size == 700_000
    second = await asyncio.to_thread(
        subprocess.run, [curl, "-sS", "-f", "-C", "-", "-o", str(out), url], check=False
    )
    assert second.returncode == 0
    assert out.read_bytes() == MODEL


async def test_not_yet_mirrored_is_503_with_retry_after(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL, chunk_size=0)  # without a chunk list: nothing before the whole file
    hostile.faults[manifest["artifact_url"]] = Fault(stall_after=1000, times=100)
    settings = gateway_settings(reg, tmp_path / "data", upstream=hostile.url, mirror={"read_timeout_s": 30.0})
    async with running(settings) as g:
        await until(lambda: g.mirror.index is not None, what="index fetched")
        status, headers, _ = await get(g)
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert not g.store.is_verified(SHA)
