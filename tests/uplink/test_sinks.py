"""The HTTP sink against a real ingest server that refuses things: a wrong token is retried and
loses nothing; a poison record is split out and only it is skipped, counted and reported."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.runtime.stats import Stats
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox
from gateway.uplink.sinks import HttpSink
from tests.gw import until


async def test_wrong_token_is_retried_and_a_poison_record_costs_only_itself(tmp_path: Path) -> None:
    accepted: dict[int, dict[str, Any]] = {}

    async def ingest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer right":
            return web.Response(status=401, text="bad token")
        raw = await request.read()  # aiohttp may already have undone the Content-Encoding
        records = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)["records"]
        if any(r["body"].get("poison") for r in records):
            return web.Response(status=422, text="cannot take that")
        for r in records:
            accepted[r["seq"]] = r
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    sink = HttpSink(f"http://127.0.0.1:{port}/ingest", "right", "site-1")
    stats = Stats()
    fwd = Forwarder(box, [sink], stats, retry_initial_s=0.05, retry_max_s=0.1, idle_s=0.1)
    task = asyncio.create_task(fwd.run())
    try:
        sink.token = "wrong"
        for i in range(9):
            await box.append("event", {"i": i, "poison": i == 4}, 1.0)
        await until(lambda: stats["uplink.http.errors"] >= 2, what="401s retried")
        assert not accepted and box.peek("http")  # nothing dropped for a configuration mistake
        sink.token = "right"  # the installer fixes the token
        events = lambda: sorted(r["body"]["i"] for r in accepted.values() if r["kind"] == "event")  # noqa: E731
        await until(lambda: len(events()) == 8, what="everything but the poison record")
        assert events() == [0, 1, 2, 3, 5, 6, 7, 8]
        await until(
            lambda: any(r["kind"] == "drops" for r in accepted.values()),
            what=f"the drops record in {accepted}",
        )
        drops = next(r for r in accepted.values() if r["kind"] == "drops")["body"]["dropped"]
        assert drops == {"event": {"refused by http": 1}}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fwd.close()
        box.close()
        await runner.cleanup()
