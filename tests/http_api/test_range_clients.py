"""Range clients of the field against a real gateway: SWUpdate-shaped many-range requests, and
Debian's wget, curl and aria2c resuming an interrupted download, byte for byte.

SWUpdate's zchunk delta handler asks for up to 150 ranges of whole chunks in one request and
fails on any answer but 206; wget ``-c``, curl ``-C -`` and aria2c (8 connections per file) resume
with ``Range: bytes=N-`` or several ``bytes=A-B`` at once. Each client is cut mid-download (a rate
limit keeps it busy, then SIGKILL) and run again without the limit; the file must be exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.peers import free_port, gateway_process, need, serve_args, stop, wait_port

CHUNK = 16_384
MODEL = random.Random(14).randbytes(8 << 20)
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


def parts_of(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    msg = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.get_payload()]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_150_scattered_whole_chunks_are_one_206_with_exact_bytes(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    reg.publish(MODEL)
    rng = random.Random(seed)
    chunks = rng.sample(range(0, len(MODEL) // CHUNK, 2), 150)  # scattered, unsorted, none touching
    spec = ",".join(f"{c * CHUNK}-{c * CHUNK + CHUNK - 1}" for c in chunks)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        async with (
            aiohttp.ClientSession() as s,
            s.get(base_url(gw) + PATH, headers={"Range": "bytes=" + spec}) as r,
        ):
            body = await r.read()
            status, ctype, length = r.status, r.headers["Content-Type"], r.headers["Content-Length"]
    assert status == 206
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert int(length) == len(body)
    got = parts_of(ctype, body)
    covered = set()
    for content_range, data in got:
        first, last = map(int, content_range.removeprefix("bytes ").split("/")[0].split("-"))
        assert content_range.endswith(f"/{len(MODEL)}")
        assert data == MODEL[first : last + 1]
        covered |= set(range(first, last + 1, CHUNK))
    assert covered == {c * CHUNK for c in chunks}  # every chunk asked for, and nothing else
    payload = 150 * CHUNK
    print(f"\n150 ranges ({payload} bytes asked): 206, {len(got)} parts, {len(body)} bytes body "
          f"({len(body) - payload} bytes of part headers, {len(body) / len(MODEL):.3f}x the file)")  # fmt: skip


@pytest.fixture
def gateway_url(reg: Registry, tmp_path: Path) -> Iterator[str]:
    """A real ``ota-gateway serve`` process, its upstream the registry folder, the model mirrored."""
    reg.publish(MODEL)
    port = free_port()
    args = serve_args(tmp_path / "data", str(reg.root), port, site=reg.site, trusted_key=reg.public_key)
    proc = gateway_process(
        args,
        env={"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30)
        url = f"http://127.0.0.1:{port}{PATH}"
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-sfI", "-o", "/dev/null", url], check=False).returncode != 0:
            assert time.monotonic() < deadline, "artifact never mirrored"
            time.sleep(0.05)  # polling a condition with a deadline
        yield url
    finally:
        stop(proc)


def _written(out: Path) -> int:
    """Bytes actually written (aria2c may preallocate: count allocated blocks too)."""
    st = out.stat()
    return min(st.st_size, st.st_blocks * 512)


class CuttingProxy:
    """A TCP hop that drops each connection after ``budget`` bytes towards the client: the link
    failing mid-download, for every connection the client opens (aria2c opens eight)."""

    def __init__(self, target: tuple[str, int], budget: int) -> None:
        self.target, self.budget = target, budget
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)

        async def upward() -> None:
            while data := await reader.read(65536):
                up_w.write(data)
                await up_w.drain()

        up = asyncio.create_task(upward())
        left = self.budget
        try:
            while left > 0 and (data := await up_r.read(min(65536, left))):
                writer.write(data)
                await writer.drain()
                left -= len(data)
            self.cuts += left <= 0
        except OSError:
            pass
        finally:
            up.cancel()
            for w in (writer, up_w):
                w.transport.abort()


CLIENTS = {
    "wget": ["-c", "--tries=1", "-O", "{out}", "{url}"],
    "curl": ["-sS", "-f", "-C", "-", "-w", "HTTP %{{http_code}} %{{size_download}}", "-o", "{out}", "{url}"],
    "aria2c": ["-c", "-x", "8", "-s", "8", "-k", "1M", "--max-tries=1", "--file-allocation=none",
               "--log={dir}/log", "--log-level=info", "-d", "{dir}", "-o", "model.bin", "{url}"],
}  # fmt: skip
RESUME_FLAGS = {"wget": ["-nv", "-S"], "curl": [], "aria2c": []}


def statuses(client: str, done: subprocess.CompletedProcess[str], work: Path) -> list[str]:
    """The HTTP status codes the resumed run received, from the client's own report."""
    text = (work / "log").read_text() if client == "aria2c" else done.stdout + done.stderr
    return re.findall(r"HTTP(?:/1\.[01])? (\d{3})\b", text)


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_debian_clients_resume_through_the_gateway(
    gateway_url: str, tmp_path: Path, client: str
) -> None:
    binary = need(client)
    work = tmp_path / client
    work.mkdir()
    out = work / "model.bin"

    def argv(url: str, extra: list[str] = []) -> list[str]:  # noqa: B006 (never mutated)
        return [binary, *extra, *(a.format(out=out, url=url, dir=work) for a in CLIENTS[client])]

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=work, check=False, timeout=60, capture_output=True, text=True)

    host_port = gateway_url.split("/")[2]
    target = (host_port.split(":")[0], int(host_port.split(":")[1]))
    proxy = CuttingProxy(target, budget=400_000)
    async with proxy as port:
        cut = await asyncio.to_thread(run, argv(gateway_url.replace(host_port, f"127.0.0.1:{port}")))
    assert cut.returncode != 0 and proxy.cuts >= 1, f"{client} was not cut ({cut.returncode})"
    cut_at, written = await asyncio.to_thread(lambda: (out.stat().st_size, _written(out)))
    assert 0 < written < len(MODEL), cut_at
    if client == "aria2c":
        await asyncio.to_thread((work / "log").unlink)
    done = await asyncio.to_thread(run, argv(gateway_url, RESUME_FLAGS[client]))
    assert done.returncode == 0, f"{client} resume failed with {done.returncode}: {done.stderr}"
    await asyncio.to_thread(check_resumed, client, done, work, cut_at)


def check_resumed(client: str, done: subprocess.CompletedProcess[str], work: Path, cut_at: int) -> None:
    """The file is the model, and the second run fetched only what the first had not."""
    out = work / "model.bin"
    got = out.read_bytes()
    assert hashlib.sha256(got).hexdigest() == SHA, f"{client}: {len(got)} bytes, not the model"
    assert not os.path.exists(str(out) + ".aria2")  # aria2c finished its control file too
    # It resumed: every answer of the second run was a 206, never the whole file again.
    codes = statuses(client, done, work)
    if client == "aria2c":
        # aria2c's first GET (no Range) learns the length and drops the body; every segment after
        # it is a Range request, resumed part-way into its 1 MiB piece.
        log = (work / "log").read_text()
        firsts = [int(n) for n in re.findall(r"Range: bytes=(\d+)-", log)]
        assert firsts and any(n % (1 << 20) for n in firsts), firsts
        codes = codes[1:] if codes[:1] == ["200"] else codes
    assert codes and set(codes) == {"206"}, (client, codes)
    if client == "curl":
        assert done.stdout.split()[-1] == str(len(MODEL) - cut_at)  # only the missing tail came
