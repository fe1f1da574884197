"""Site reports: whatever the number of devices, one batch per interval reaches the ingest URL."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until


async def test_inventory_changes_and_events_go_up_as_one_report_per_interval(
    reg: Registry, tmp_path: Path
) -> None:
    posts: list[dict[str, Any]] = []

    async def ingest(request: web.Request) -> web.Response:
        raw = await request.read()
        posts.append(json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = gateway_settings(
            reg,
            tmp_path / "data",
            uplink={"ingest_url": f"http://127.0.0.1:{port}/ingest", "report_interval_s": 5.0},
        )
        async with running(settings) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)

            async def device(i: int) -> None:
                async with s.get(
                    f"{base}/devices/dev-{i}/updates", params={"hw": "rev2", "fw": "1.0.0"}
                ) as r:
                    await r.read()
                body = {"event": "healthy", "model_id": "detector", "version": "1.0.0"}
                async with s.post(f"{base}/devices/dev-{i}/events", json=body) as r:
                    assert r.status == 200

            await asyncio.gather(*(device(i) for i in range(200)))
            await until(
                lambda: any(
                    r["kind"] == "inventory" and len(r["body"]["changes"]) >= 400
                    for p in posts
                    for r in p["records"]
                ),
                timeout_s=15,
                what="the inventory report",
            )
            inventory_posts = [p for p in posts if any(r["kind"] == "inventory" for r in p["records"])]
            assert len(inventory_posts) == 1  # 200 devices' polls and events: one request
            changes = next(r for r in inventory_posts[0]["records"] if r["kind"] == "inventory")["body"][
                "changes"
            ]
            assert {c["device_id"] for c in changes} == {f"dev-{i}" for i in range(200)}
            assert sum(1 for c in changes if c.get("event") == "healthy") == 200
            assert all(p["site"] == "test-site" for p in posts)
    finally:
        await runner.cleanup()
