"""Every byte of a verified blob's download is the right one, over plain HTTP (``sendfile``) and over
TLS (positioned reads through Python), from one descriptor shared by many downloads at once.

Seeded random single ranges (with suffix and open-ended forms), several ranges at once
(``multipart/byteranges``), whole files with real curl and with a client that reads slowly (so the
socket fills and the rest goes out as it drains), and HEAD; all at once on a few connections. The
blob is bigger than a loopback socket's largest send buffer (4 MiB), so no whole file fits in one
``sendfile`` call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import need
from tests.pki import site_pki

MODEL = os.urandom(6 << 20)
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


class Site:
    """One gateway's artifact URL, the CA its certificate is checked with, and its counters."""

    def __init__(self, url: str, ca: str | None, counters: Callable[[], dict[str, int]]) -> None:
        self.url = url
        self.ca = ca
        self.counters = counters

    def session(self) -> aiohttp.ClientSession:
        ssl_ctx: object = True
        if self.ca is not None:
            import ssl

            ssl_ctx = ssl.create_default_context(cafile=self.ca)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=4))  # type: ignore[arg-type]

    def curl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [need("curl"), "-sS", "-f", *(["--cacert", self.ca] if self.ca else []), *args, self.url]
        return subprocess.run(cmd, capture_output=True, check=False, timeout=60)


@pytest.fixture(params=["http", "https"])
async def site(request: pytest.FixtureRequest, reg: Registry, tmp_path: Path) -> AsyncIterator[Site]:
    reg.publish(MODEL)
    http: dict[str, str] = {}
    ca = None
    if request.param == "https":
        pki = site_pki(tmp_path / "pki", clients=[], hosts=["127.0.0.1"])
        http = {"tls_cert": pki.server.pair[0], "tls_key": pki.server.pair[1]}
        ca = pki.ca.pair[0]
    async with running(gateway_settings(reg, tmp_path / "data", http=http)) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="artifact mirrored")
        host, port = gw.http_addresses[0][:2]
        yield Site(f"{request.param}://{host}:{port}{PATH}", ca, gw.stats.snapshot)


def random_range(rng: random.Random) -> tuple[str, int, int]:
    """A Range value and the inclusive byte positions it names."""
    size = len(MODEL)
    first = rng.choice([0, size - 1, rng.randrange(size)])
    kind = rng.choice(["closed", "closed", "open", "suffix", "past the end"])
    if kind == "open":
        return f"bytes={first}-", first, size - 1
    if kind == "suffix":
        n = rng.randint(1, size)
        return f"bytes=-{n}", size - n, size - 1
    if kind == "past the end":
        return f"bytes={first}-{size + rng.randint(0, 10**9)}", first, size - 1
    last = min(size - 1, first + rng.choice([0, 1, 4095, 1 << 20, rng.randrange(size)]))
    return f"bytes={first}-{last}", first, last


async def one_range(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    value, first, last = random_range(rng)
    async with s.get(site.url, headers={"Range": value}) as r:
        body = await r.read()
        assert r.status == 206, value
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(MODEL)}", value
        assert body == MODEL[first : last + 1], value


async def several_ranges(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    starts = sorted(rng.sample(range(0, len(MODEL), 4096), rng.randint(2, 5)))
    spans = [(a, a + rng.randint(0, 4095)) for a in starts]  # apart: none merges with another
    value = "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)
    async with s.get(site.url, headers={"Range": value}) as r:
        body = await r.read()
        assert r.status == 206, value
        content_type = r.headers["Content-Type"]
    msg = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p["Content-Range"] for p in parts] == [f"bytes {a}-{b}/{len(MODEL)}" for a, b in spans]
    for part, (a, b) in zip(parts, spans, strict=True):
        assert part.get_payload(decode=True) == MODEL[a : b + 1]


async def slow_whole_file(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    """A reader that pauses: the socket fills and the rest is sent as it drains."""
    got = bytearray()
    async with s.get(site.url) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(256 << 10):
            got += chunk
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0, 0.02))
    assert hashlib.sha256(got).hexdigest() == SHA


async def head(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    async with s.head(site.url) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == len(MODEL)
        assert r.headers["ETag"] == f'"{SHA}"'


async def curl_range(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    value, first, last = random_range(rng)
    done = await asyncio.to_thread(site.curl, "-o", "-", "-r", value.removeprefix("bytes="))
    assert done.returncode == 0, done.stderr
    assert done.stdout == MODEL[first : last + 1], value


async def curl_whole_file(site: Site, s: aiohttp.ClientSession, rng: random.Random) -> None:
    done = await asyncio.to_thread(site.curl, "-o", "-")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == SHA


KINDS = [one_range, one_range, one_range, several_ranges, slow_whole_file, head, curl_range, curl_whole_file]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_ranges_and_whole_files_are_exact_over_http_and_tls(site: Site, seed: int) -> None:
    rng = random.Random(seed)
    async with site.session() as s:
        for _ in range(3):  # rounds of downloads at once, on at most four connections
            kinds = [rng.choice(KINDS) for _ in range(8)]
            await asyncio.gather(*(kind(site, s, random.Random(rng.random())) for kind in kinds))
        await curl_whole_file(site, s, rng)
    assert site.counters().get("downloads.unavailable", 0) == 0


def socket_descriptors() -> int:
    """This process's open sockets (the gateway runs in it)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_clients_gone_mid_download_leave_no_descriptor_behind(site: Site, seed: int) -> None:
    """Clients that drop the connection anywhere in the body (the socket full or not): the next
    downloads are exact, and every socket the downloads used is closed afterwards."""
    rng = random.Random(seed)
    before = socket_descriptors()

    async def vanish() -> None:
        async with site.session() as s, s.get(site.url) as r:
            assert r.status == 200
            await r.content.readexactly(rng.randrange(1, len(MODEL)))
            await asyncio.sleep(rng.uniform(0, 0.05))
            r.close()  # drops the connection with the rest of the body unread

    await asyncio.gather(*(vanish() for _ in range(6)))
    async with site.session() as s:
        await asyncio.gather(*(slow_whole_file(site, s, random.Random(rng.random())) for _ in range(2)))
        await one_range(site, s, rng)
    await until(lambda: socket_descriptors() <= before, what="the downloads' sockets closed")
