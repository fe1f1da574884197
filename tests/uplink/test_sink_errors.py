"""Every sink error is the forwarder's to retry, never the end of delivery.

The first test uses a real ingest server whose reply names a charset nobody knows (before the fix
the HTTP sink's ``r.text()`` raised ``LookupError``, which ended the forwarder for good). The
second drives the forwarder through the narrow :class:`~gateway.uplink.sinks.Sink` seam with a small
sink that raises errors of arbitrary types (no real sink can be made to raise each of them on
demand), over several seeds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.runtime.stats import Stats
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox, Record
from gateway.uplink.sinks import HttpSink
from tests.gw import until


async def test_a_reply_in_an_unknown_charset_neither_ends_delivery_nor_repeats_it(tmp_path: Path) -> None:
    seen: list[int] = []
    posts = 0

    async def ingest(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        raw = await request.read()
        records = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)["records"]
        seen.extend(r["body"]["i"] for r in records)
        headers = {"Content-Type": "text/plain; charset=no-such-charset"}
        return web.Response(status=200, body=b"ok \xff\xfe", headers=headers)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    sink = HttpSink(f"http://127.0.0.1:{port}/ingest", "", "site-1")
    fwd = Forwarder(box, [sink], Stats(), retry_initial_s=0.02, retry_max_s=0.05, idle_s=0.05)
    task = asyncio.create_task(fwd.run())
    try:
        for i in range(5):
            await box.append("event", {"i": i}, 1.0)
        await until(lambda: sorted(set(seen)) == list(range(5)), what="the first records delivered")
        for i in range(5, 10):
            await box.append("event", {"i": i}, 1.0)
        await until(lambda: sorted(set(seen)) == list(range(10)), what=f"the later records too ({seen})")
        await until(lambda: not box.peek("http"), what="the outbox drained")
        await asyncio.sleep(0.2)  # no resends of what the ingest took: each record arrived once
        assert sorted(seen) == list(range(10)) and posts >= 1 and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fwd.close()
        box.close()
        await runner.cleanup()


class _Erratic:
    """A sink that raises an error of a random type on its first delivery and on about half of
    the others (the first for certain: on a busy machine the forwarder may need only a few
    deliveries for everything, and the test must see it retry)."""

    name = "http"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.got: list[int] = []
        self.raised = 0

    async def deliver(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)
        if not self.raised or self.rng.random() < 0.5:
            self.raised += 1
            error: type[Exception] = self.rng.choice(
                [RuntimeError, KeyError, ValueError, ZeroDivisionError, OSError]
            )
            raise error("the sink broke")
        self.got.extend(r.body["i"] for r in records)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("seed", range(5))
async def test_errors_of_any_type_are_retried_and_nothing_is_lost(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    sink = _Erratic(random.Random(f"sink {seed}"))  # its own: the appends' timing draws from rng
    fwd = Forwarder(box, [sink], Stats(), retry_initial_s=0.005, retry_max_s=0.02, idle_s=0.02)
    task = asyncio.create_task(fwd.run())
    expected: list[Any] = []
    try:
        for i in range(60):
            await box.append("event", {"i": i}, 1.0)
            expected.append(i)
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0, 0.03))
        await until(lambda: sorted(set(sink.got)) == expected, what=f"every record (seed {seed})")
        assert sink.raised > 0 and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        box.close()
