"""The guarded HTTP listener on real loopback sockets: slowloris, idle keep-alive, the connection cap,
and the accept back-off's arithmetic."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.http.listener import HttpLimits, start_http
from gateway.runtime.accept import AcceptBackoff, raise_descriptor_limit
from gateway.runtime.stats import Stats
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until


@dataclass
class Started:
    port: int
    stats: Stats
    entered: asyncio.Event  # a /hold request reached its handler
    release: asyncio.Event  # lets the held requests answer


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    runners: list[web.AppRunner] = []

    async def start(**limits: Any) -> Started:
        release, entered = asyncio.Event(), asyncio.Event()

        async def hello(_request: web.Request) -> web.Response:
            return web.Response(text="hello")

        async def hold(_request: web.Request) -> web.Response:
            entered.set()
            await release.wait()  # a long poll: held open until the test lets it go
            return web.Response(text="released")

        app = web.Application()
        app.router.add_get("/", hello)
        app.router.add_get("/hold", hold)
        stats = Stats()
        runner, addresses = await start_http(
            app,
            "127.0.0.1",
            0,
            name="http",
            limits=HttpLimits(
                **{"max_connections": 100, "header_timeout_s": 30.0, "idle_timeout_s": 30.0, **limits}
            ),
            stats=stats,
        )
        runners.append(runner)
        return Started(int(addresses[0][1]), stats, entered, release)

    yield start
    for runner in runners:
        await runner.cleanup()


async def _open(port: int, first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def _closed(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection (fails if it does not)."""
    data = b""
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    return data


async def _get(port: int, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def test_slowloris_heads_are_dropped_after_the_header_timeout_but_a_long_poll_is_not(
    serve: Callable[..., Awaitable[Started]],
) -> None:
    s = await serve(header_timeout_s=0.5)
    port, stats = s.port, s.stats
    held = asyncio.ensure_future(_get(port, "/hold"))
    await asyncio.wait_for(s.entered.wait(), 10)
    silent = [await _open(port) for _ in range(20)]
    trickling = [await _open(port, b"GET / HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]
    for _reader, writer in trickling:  # one more header byte: still not a whole head
        writer.write(b"X")
        await writer.drain()
    for reader, _writer in silent + trickling:
        assert await _closed(reader) == b""
    await until(lambda: stats["http.header_timeouts"] == 40, what="40 header timeouts counted")
    # the long poll began before the slow clients and outlived their timeout: it was not cut
    assert not held.done()
    s.release.set()
    assert await held == (200, "released")
    assert await _get(port) == (200, "hello")
    for _reader, writer in silent + trickling:
        writer.close()


async def test_a_slow_second_request_on_a_keep_alive_connection_is_dropped(
    serve: Callable[..., Awaitable[Started]],
) -> None:
    s = await serve(header_timeout_s=0.5)
    port, stats = s.port, s.stats
    reader, writer = await _open(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readexactly(5)  # "hello"
    writer.write(b"GET / HTTP/1.1\r\nHo")
    await writer.drain()
    assert await _closed(reader) == b""
    assert stats["http.header_timeouts"] == 1
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    serve: Callable[..., Awaitable[Started]],
) -> None:
    s = await serve(idle_timeout_s=0.5)
    port, stats = s.port, s.stats
    reader, writer = await _open(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(5)
    assert await _closed(reader) == b""  # aiohttp's keepalive_timeout, from http.idle_timeout_s
    assert stats["http.header_timeouts"] == 0
    writer.close()


async def test_past_max_connections_new_ones_get_503_and_service_resumes_when_old_ones_go(
    serve: Callable[..., Awaitable[Started]],
) -> None:
    s = await serve(max_connections=5)
    port, stats = s.port, s.stats
    held = [await _open(port) for _ in range(5)]  # accepted in this order: the kernel's queue is FIFO
    extra = []
    for _ in range(10):
        reader, writer = await _open(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.append(writer)
        answer = await _closed(reader)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
    assert stats["http.refused_full"] == 10
    for _reader, writer in held[:2]:
        writer.close()

    async def served() -> bool:
        try:
            return await _get(port) == (200, "hello")
        except aiohttp.ClientError:
            return False

    deadline = asyncio.get_running_loop().time() + 10
    while not await served():
        assert asyncio.get_running_loop().time() < deadline, "not served after old connections went"
    for _reader, writer in held[2:]:
        writer.close()
    for writer in extra:
        writer.close()


@pytest.mark.parametrize(
    ("failures", "expected_delays", "expected_reports"),
    [
        (1, [0.05], [1]),
        (4, [0.05, 0.1, 0.2, 0.4], [1, 0, 0, 0]),
        (8, [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0], [1, 0, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_backoff_grows_to_its_cap_and_reports_once_per_interval(
    failures: int, expected_delays: list[float], expected_reports: list[int]
) -> None:
    b = AcceptBackoff(initial_s=0.05, max_s=2.0, log_interval_s=10.0)
    got = [b.failed(now=100.0 + i * 0.1) for i in range(failures)]
    assert [d for d, _ in got] == pytest.approx(expected_delays)
    assert [r for _, r in got] == expected_reports


def test_backoff_reports_the_count_of_an_interval_and_resets_after_success() -> None:
    b = AcceptBackoff(initial_s=0.05, max_s=2.0, log_interval_s=10.0)
    assert b.failed(0.0)[1] == 1
    for t in range(1, 10):
        assert b.failed(float(t))[1] == 0
    assert b.failed(10.0)[1] == 10  # the nine unreported ones and this one
    assert b.succeeded() == 11
    assert b.succeeded() == 0
    assert b.failed(11.0) == (0.05, 0)  # a new streak starts at the initial pause; logged at 20 s


def test_the_soft_descriptor_limit_is_raised_towards_the_caps_never_past_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, cap), hard))
        assert raise_descriptor_limit(min(1000, cap)) == min(1000, cap)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (min(1000, cap), hard)
        assert raise_descriptor_limit(10) == min(1000, cap)  # never lowered
        if hard != resource.RLIM_INFINITY:
            assert raise_descriptor_limit(hard + 1000) == hard  # never past the hard limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_gateways_device_api_takes_its_limits_from_the_http_settings(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    settings = gateway_settings(
        make_registry(),
        tmp_path / "data",
        http={"listen": "127.0.0.1:0", "max_connections": 3, "header_timeout_s": 2.0},
    )
    async with running(settings) as gw:
        port = int(gw.http_addresses[0][1])
        held = [await _open(port, b"GET /healthz HTTP/1.1\r\n") for _ in range(3)]  # heads never finished
        reader, writer = await _open(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _closed(reader)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
        assert gw.stats["http.refused_full"] == 1
        for r, _w in held:
            assert await _closed(r) == b""  # dropped by http.header_timeout_s
        assert gw.stats["http.header_timeouts"] == 3
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        for _r, w in [*held, (reader, writer)]:
            w.close()


async def test_malformed_requests_are_one_log_line_per_interval_not_a_traceback_each(
    reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        host, port = gw.http_addresses[0][:2]
        for i in range(50):
            r, w = await asyncio.open_connection(host, port)
            w.write(b"GET /\x01" + str(i).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            assert (await r.read(12)) == b"HTTP/1.0 400"
            w.close()
            await w.wait_closed()
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(lines) <= 2 and all(r.exc_info is None for r in lines)
    assert "malformed" in lines[0].getMessage()
    assert gw.stats.snapshot()["http.malformed"] == 50
