"""The error tree's HTTP answers come from one middleware (:mod:`gateway.http.errors`).

First each branch through a real aiohttp server on an ephemeral port whose one handler raises what
the test names; then the guarantee against a real gateway: hostile bodies to the device writes,
over several seeds, are answered 200 or 400 with a reason, never a 5xx.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.core.errors import FormatError, OutboxFullError, StorageError, UntrustedError
from gateway.http.context import STATS
from gateway.http.errors import map_errors
from gateway.runtime.stats import Stats
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running

RAISES: dict[str, Callable[[], Exception]] = {
    "format": lambda: FormatError("records[3].seq: a whole number of at least 1"),
    "untrusted": lambda: UntrustedError("statement: no signature by a key we trust"),
    "storage": lambda: StorageError("disk full", path="/data/outbox"),
    "full": lambda: OutboxFullError("outbox at its bound"),
    "conflict": lambda: web.HTTPConflict(text="not yours\n"),
    "bug": lambda: ValueError("a bug stays a bug"),
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Stats]]:
    async def handler(request: web.Request) -> web.Response:
        raise RAISES[request.match_info["what"]]()

    stats = Stats()
    app = web.Application(middlewares=[map_errors])
    app[STATS] = stats
    app.router.add_get("/{what}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", stats
    await runner.cleanup()


@pytest.mark.parametrize(
    ("what", "status", "says"),
    [
        ("format", 400, "records[3].seq: a whole number of at least 1\n"),
        ("untrusted", 400, "statement: no signature by a key we trust\n"),
        ("storage", 503, "cannot do that now (disk full); retry later\n"),
        ("full", 503, "cannot do that now (outbox at its bound); retry later\n"),
        ("conflict", 409, "not yours\n"),
    ],
)
async def test_each_branch_of_the_tree_has_its_status_and_reason(
    server: tuple[str, Stats], what: str, status: int, says: str
) -> None:
    url, stats = server
    async with aiohttp.ClientSession() as s, s.get(f"{url}/{what}") as r:
        assert (r.status, await r.text()) == (status, says)
        if status == 503:
            assert int(r.headers["Retry-After"]) > 0
            assert stats["http.storage_unavailable"] == 1


async def test_a_bug_is_not_dressed_up_as_the_senders_fault(server: tuple[str, Stats]) -> None:
    url, _ = server
    async with aiohttp.ClientSession() as s, s.get(f"{url}/bug") as r:
        assert r.status == 500  # not a 400: only the error tree's refusals are the sender's


def _hostile(rng: random.Random) -> bytes:
    """A body a broken or hostile device might send to a write endpoint."""
    field = rng.choice(["event", "model_id", "version", "reason", "device_id", "cpu_percent", "timestamp"])
    value = rng.choice([None, True, -1, 1e308, "", "../x", "x" * 5000, [], {"a": [1]}, "exploded", "failed"])
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:
        return b"[" * rng.randrange(1, 300)
    if kind == 2:
        return json.dumps(rng.choice([[1, 2], "text", 3, None])).encode()
    if kind == 3:
        return json.dumps({"event": "failed", field: value}).encode()
    return json.dumps({field: value, "device_id": "cam-1", "num_inferences": value}).encode()


@pytest.mark.parametrize("seed", range(4))
async def test_hostile_writes_get_a_reason_never_a_5xx(reg: Registry, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    async with running(gateway_settings(reg, tmp_path)) as gw, aiohttp.ClientSession() as s:
        assert isinstance(gw, Gateway)
        for _ in range(60):
            path = rng.choice(["events", "metrics"])
            body = _hostile(rng)
            headers = {"Content-Type": "application/json"}
            async with s.post(f"{base_url(gw)}/devices/cam-1/{path}", data=body, headers=headers) as r:
                text = await r.text()
                assert r.status in (200, 400), (seed, path, body[:80], r.status, text)
                assert r.status == 200 or len(text.strip()) > 3, (body[:80], text)
