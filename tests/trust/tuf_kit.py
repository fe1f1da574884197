"""For the TUF system tests: an upstream that serves a registry folder but can be made to lie
(per-path overrides, as a man in the middle or a compromised mirror would), a real ``ota-gateway
serve`` process on ``trust.format = "tuf"`` in front of it, and what to read from that process."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.peers import free_port, gateway_process, stop, wait_port
from tests.registry.tufkit import TufRegistry


@dataclass
class LyingUpstream:
    """Serves ``root``'s files; ``overrides`` (path -> bytes) win. Counts requests and bytes per path."""

    root: Path
    overrides: dict[str, bytes] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        self.requests[rel] += 1
        body = self.overrides.get(rel)
        if body is None:
            path = (self.root / rel).resolve()
            if not path.is_relative_to(self.root.resolve()) or not path.is_file():
                raise web.HTTPNotFound()
            body = await asyncio.to_thread(path.read_bytes)
        self.bytes_sent[rel] += len(body)
        return web.Response(body=body)


@asynccontextmanager
async def lying_upstream(root: Path) -> AsyncIterator[LyingUpstream]:
    up = LyingUpstream(root)
    app = web.Application()
    app.router.add_get("/{path:.*}", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    up.url = f"http://127.0.0.1:{port}/"
    try:
        yield up
    finally:
        await runner.cleanup()


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    http: str
    operator: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.operator}/status") as r:
            assert r.status == 200
            return dict(await r.json())

    async def get(self, path: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.http}{path}") as r:
            return r.status, await r.read()

    async def until(self, cond: Any, what: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll ``/status`` until ``cond(status)``; fail naming ``what`` and the status."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = await self.status()
            if cond(st):
                return st
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"timed out waiting for {what}: {st['index']} {st['last_errors']}")
            await asyncio.sleep(0.05)  # polling a condition with a deadline


@asynccontextmanager
async def tuf_gateway(
    treg: TufRegistry,
    data: Path,
    upstream: str,
    *,
    metadata: str = "metadata",
    env: dict[str, str] | None = None,
    http_port: int | None = None,
) -> AsyncIterator[GatewayProcess]:
    """``ota-gateway serve`` as its own process, on TUF, polling ``upstream`` every 0.2 s."""
    http_port, op_port = http_port or free_port(), free_port()
    args = ["--data", str(data), "--upstream", upstream, "--http", f"127.0.0.1:{http_port}",
            "--operator", f"127.0.0.1:{op_port}", "--mqtt", "", "--site", "test-site"]  # fmt: skip
    environ = {
        "OTA_GATEWAY_TRUST__FORMAT": "tuf",
        "OTA_GATEWAY_TRUST__TUF_ROOT": str(treg.root / "metadata" / "1.root.json"),
        "OTA_GATEWAY_TRUST__TUF_METADATA": metadata,
        "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.2",
        "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.05",
        "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.2",
        "OTA_GATEWAY_GATES__FIRST_VERSION": "open",
        **(env or {}),
    }
    log = data.parent / f"{data.name}.log"
    with log.open("wb") as sink:
        proc = gateway_process(args, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_port, op_port, 20.0)
        await asyncio.to_thread(wait_port, http_port, 20.0)
        yield GatewayProcess(proc, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{op_port}", log)
    finally:
        await asyncio.to_thread(stop, proc)
