"""A small upstream of the tests' own that misbehaves on purpose, on a real aiohttp server.

It serves a registry folder with ``Range: bytes=N-`` support and a strong ETag, and per path can:
cut the connection after N bytes, stall after N bytes, serve other bytes, flip the byte at one
offset (one bad chunk), or serve a longer body. ``pace_s`` paces every body (per 64 KiB) like a
slow uplink. Every request is logged with its Range header, and the body bytes sent per path are
counted, so tests can count what crossed the "uplink".
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class Fault:
    cut_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # stop sending (but keep the connection) after this many
    wrong: bool = False  # serve other bytes of the same length
    extra: int = 0  # append this many bytes
    corrupt_at: int | None = None  # flip the byte at this offset of the file (if it is sent)
    times: int = 1  # how many requests misbehave before the path behaves


@dataclass
class Hostile:
    root: Path
    faults: dict[str, Fault] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    override: dict[str, bytes] = field(default_factory=dict)  # path -> body served instead
    url: str = ""
    pace_s: float = 0.0  # sleep after each 64 KiB of a body: a slow uplink
    sent: dict[str, int] = field(default_factory=dict)  # path -> body bytes written
    _runner: web.AppRunner | None = None

    def requests(self, suffix: str) -> list[str | None]:
        return [rng for path, rng in self.log if path.endswith(suffix)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        self.log.append((rel, request.headers.get("Range")))
        path = self.root / rel
        if rel in self.override:
            data = self.override[rel]
        elif path.is_file():
            data = path.read_bytes()
        else:
            raise web.HTTPNotFound()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        fault = self.faults.get(rel)
        if fault is not None and fault.times > 0:
            fault.times -= 1
        else:
            fault = None
        if fault is not None and fault.wrong:
            data = bytes(b ^ 0xFF for b in data)
        if fault is not None and fault.corrupt_at is not None and fault.corrupt_at < len(data):
            at = fault.corrupt_at
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        if fault is not None and fault.extra:
            data = data + b"X" * fault.extra
        start, status = 0, 200
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-") and request.headers.get("If-Range", etag) == etag:
            start, status = int(rng[6:-1]), 206
        resp = web.StreamResponse(status=status, headers={"ETag": etag, "Accept-Ranges": "bytes"})
        resp.content_length = len(data) - start
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        body = data[start:]
        limit = None
        if fault is not None:
            limit = fault.cut_after if fault.cut_after is not None else fault.stall_after
        if limit is not None:
            # Paced like a real link: a cut loses the bytes in flight, not all that were sent.
            for i in range(0, limit, 64 << 10):
                await resp.write(body[i : min(limit, i + (64 << 10))])
                await asyncio.sleep(0.002)
            if fault is not None and fault.stall_after is not None:
                await asyncio.sleep(3600)
            assert request.transport is not None
            request.transport.close()
            return resp
        for i in range(0, len(body), 64 << 10):
            piece = body[i : i + (64 << 10)]
            await resp.write(piece)
            self.sent[rel] = self.sent.get(rel, 0) + len(piece)
            if self.pace_s:
                await asyncio.sleep(self.pace_s)
        await resp.write_eof()
        return resp

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
