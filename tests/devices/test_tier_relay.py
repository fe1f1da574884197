"""The uplink relay of a parent gateway: a child's records reach the cloud through the parent's outbox.

* Two real ``ota-gateway serve`` processes and an aiohttp ingest as the cloud: a device posts
  metrics to the child, whose ``uplink.ingest_url`` is the parent's ``/uplink/batches``; the cloud
  receives the child's records as records of kind ``relay`` from the parent's site. The parent
  refuses a relay without credentials (401), with a device token or for another site than the
  child credential's own (403), a bad body (400) and a gzip bomb (413).
* ``kill -9`` of the parent at random instants while the child relays (several seeds): every record
  the child's outbox counts as delivered (its cursor) is at the cloud in the end, by (site, seq).
* The answer waits for the outbox commit: with the journal's commits held, no answer comes; a
  commit that fails is a 503 with ``Retry-After``, never a 200.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.errors import StorageError
from gateway.uplink.outbox import Outbox
from tests import gw
from tests.conftest import Registry
from tests.peers import IngestServer, free_port, gateway_process, ingest_batch, serve_args, stop, wait_port

TOKEN = "plant-site-token"
CHILD_SECRET = "line-1-gateways-own-secret"
PARENT, CHILD = "plant", "line-1"
SEEDS = int(os.environ.get("GATE_RELAY_SEEDS", "1"))


class Cloud(IngestServer):
    """The cloud's HTTP ingest: what it holds, by the (site, seq) of the record's origin."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.records: dict[tuple[str, int], dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        doc = await ingest_batch(request)
        for r in doc["records"]:
            key = (r["body"]["site"], r["body"]["seq"]) if r["kind"] == "relay" else (doc["site"], r["seq"])
            self.records.setdefault(key, r)
        return web.Response(status=204)

    def relayed(self) -> dict[int, dict[str, Any]]:
        return {seq: r for (site, seq), r in self.records.items() if site == CHILD}


FAST = {"OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.5", "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "0.5"}


def start(reg: Registry, data: Path, port: int, site: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = serve_args(data, str(reg.root), port, site=site, trusted_key=reg.public_key)
    proc = gateway_process(args, env={**FAST, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 30)
    return proc


def parent_env(cloud: int) -> dict[str, str]:
    return {
        "OTA_GATEWAY_MIRROR__CHILD_SITES": f'["{CHILD}"]',
        "OTA_GATEWAY_MIRROR__CHILD_TOKENS": f'["{CHILD}={CHILD_SECRET}"]',
        "OTA_GATEWAY_DEVICES__ACCESS": '"token"',
        "OTA_GATEWAY_DEVICES__SITE_TOKEN": f'"{TOKEN}"',
        "OTA_GATEWAY_UPLINK__INGEST_URL": f'"http://127.0.0.1:{cloud}/ingest"',
    }


def child_env(parent: int) -> dict[str, str]:
    return {
        "OTA_GATEWAY_UPLINK__INGEST_URL": f'"http://127.0.0.1:{parent}/uplink/batches"',
        "OTA_GATEWAY_UPLINK__INGEST_TOKEN": f'"{CHILD_SECRET}"',
    }


def metrics(i: int) -> dict[str, Any]:
    return {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10, "num_errors": 0,
            "avg_latency_ms": float(i)}  # fmt: skip


async def until(cond: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling a condition with a deadline


def latencies(records: dict[int, dict[str, Any]]) -> set[float]:
    return {r["body"]["body"]["latency_ms"] for r in records.values() if r["body"]["kind"] == "sample"}


async def post(s: aiohttp.ClientSession, url: str, body: bytes, **headers: str) -> tuple[int, str]:
    async with s.post(url, data=body, headers=headers) as r:
        text = await r.text()
        return r.status, text + (f"Retry-After: {r.headers['Retry-After']}" if r.status == 503 else "")


def batch(site: str, records: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps({"site": site, "records": records}).encode())


async def test_a_child_relays_through_its_parent_and_the_parent_refuses_strangers(
    reg: Registry, tmp_path: Path
) -> None:
    cloud, pport, cport = Cloud(free_port()), free_port(), free_port()
    await cloud.start()
    parent = start(reg, tmp_path / "parent", pport, PARENT, parent_env(cloud.port))
    child = start(reg, tmp_path / "child", cport, CHILD, child_env(pport))
    try:
        url = f"http://127.0.0.1:{pport}/uplink/batches"
        auth = {"Authorization": f"Bearer {CHILD_SECRET}", "Content-Encoding": "gzip"}
        one = [{"seq": 1, "kind": "sample", "at": 1.0, "body": {}}]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as s:  # no reuse after a broken body
            for i in range(20):
                status, _ = await post(s, f"http://127.0.0.1:{cport}/devices/cam-{i % 3}/metrics",
                                       json.dumps(metrics(i)).encode(), **{"Content-Type": "application/json"})  # fmt: skip
                assert status == 200
            await until(lambda: latencies(cloud.relayed()) == {float(i) for i in range(20)}, "relayed")
            assert {r["kind"] for r in cloud.relayed().values()} == {"relay"}
            status, text = await post(s, url, batch(CHILD, one), **{"Content-Encoding": "gzip"})
            assert status == 401, text
            status, text = await post(s, url, batch(CHILD, one), **{"Content-Encoding": "gzip",
                                                                   "Authorization": "Bearer nope"})  # fmt: skip
            assert status == 403, text
            status, text = await post(
                s, url, batch(CHILD, one), **{**auth, "Authorization": f"Bearer {TOKEN}"}
            )
            assert status == 403 and "device credential cannot relay" in text, text
            status, text = await post(s, url, batch("line-9", one), **auth)
            assert status == 403 and "cannot relay for 'line-9'" in text, text
            status, text = await post(s, url, batch(PARENT, one), **auth)
            assert status == 403, text
            for bad, why in [(b"not gzip", "gzip"), (gzip.compress(b"[1]"), "object"),
                             (batch(CHILD, [{"seq": "x"}]), "seq"), (batch(CHILD, [{**one[0], "at": None}]), "at")]:  # fmt: skip
                status, text = await post(s, url, bad, **auth)
                assert status == 400 and why in text, (status, text)
            status, text = await post(s, url, gzip.compress(bytes(40 << 20)), **auth)  # a gzip bomb
            assert status == 413, text
            status, text = await post(s, url, batch(CHILD, one), **auth)
            assert status == 200 and json.loads(text) == {"accepted": 1, "duplicates": 0}, text
            status, text = await post(s, url, batch(CHILD, one), **auth)  # the answer was lost: again
            assert status == 200 and json.loads(text) == {"accepted": 0, "duplicates": 1}, text
    finally:
        stop(child)
        stop(parent)
        await cloud.stop()


def child_cursor(data: Path) -> int:
    db = sqlite3.connect(data / "outbox.sqlite")
    try:
        row = db.execute("SELECT acked FROM cursors WHERE sink = 'http'").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()


async def report(cport: int, first: int, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for i in range(first, first + n):
            async with s.post(f"http://127.0.0.1:{cport}/devices/cam-{i % 4}/metrics", json=metrics(i)) as r:
                assert r.status == 200  # durable at the child from here on


async def kill_9_run(reg: Registry, tmp: Path, rng: random.Random) -> tuple[int, set[int]]:
    """The child's cursor at the end, and the child's seqs the cloud holds."""
    cloud, pport, cport = Cloud(free_port()), free_port(), free_port()
    await cloud.start()
    parent = start(reg, tmp / "parent", pport, PARENT, parent_env(cloud.port))
    child = start(reg, tmp / "child", cport, CHILD, child_env(pport))
    try:
        for round_ in range(3):
            sender = asyncio.ensure_future(report(cport, round_ * 100, 100))
            await asyncio.sleep(rng.uniform(0.0, 1.5))  # a random instant, not a state
            parent.kill()
            parent.wait()
            await sender
            parent = start(reg, tmp / "parent", pport, PARENT, parent_env(cloud.port))
        await until(lambda: len(latencies(cloud.relayed())) == 300, "everything relayed in the end")
    finally:
        stop(child)
        cursor = child_cursor(tmp / "child")
        try:
            await until(lambda: set(range(1, cursor + 1)) <= set(cloud.relayed()), "delivered at the cloud")
        finally:
            stop(parent)
            await cloud.stop()
    return cursor, set(cloud.relayed())


async def test_kill_9_of_the_parent_loses_nothing_the_child_counts_delivered(
    reg: Registry, tmp_path: Path
) -> None:
    for seed in range(SEEDS):
        cursor, at_cloud = await kill_9_run(reg, tmp_path / f"seed-{seed}", random.Random(seed))
        missing = sorted(set(range(1, cursor + 1)) - at_cloud)
        print(f"seed {seed}: child cursor {cursor}, at the cloud {len(at_cloud)}, missing {missing}")
        assert not missing and cursor > 0


async def test_the_parent_answers_only_once_the_outbox_committed(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[tuple[threading.Event, list[BaseException]]] = []
    real = Outbox.append_bounded

    def holding(self: Outbox, kind: str, texts: Any, now: float, **kw: Any) -> int:
        gate: tuple[threading.Event, list[BaseException]] = (threading.Event(), [])
        held.append(gate)  # the commit, in the test's hands
        assert gate[0].wait(30)
        if gate[1]:
            raise gate[1][0]
        return real(self, kind, texts, now, **kw)

    monkeypatch.setattr(Outbox, "append_bounded", holding)
    settings = gw.gateway_settings(reg, tmp_path / "parent", mirror={"upstream": str(reg.root),
                                   "child_sites": (CHILD,), "child_tokens": (f"{CHILD}={CHILD_SECRET}",)})  # fmt: skip
    auth = {"Content-Encoding": "gzip", "Authorization": f"Bearer {CHILD_SECRET}"}
    async with gw.running(settings) as p, aiohttp.ClientSession() as s:
        url = gw.base_url(p) + "/uplink/batches"
        records = [{"seq": i, "kind": "sample", "at": float(i), "body": {"i": i}} for i in range(1, 4)]
        answer = asyncio.ensure_future(post(s, url, batch(CHILD, records), **auth))
        await until(lambda: len(held) == 1, "the batch handed to the outbox")
        await asyncio.sleep(0.2)  # gives a premature answer the time to arrive; not a synchronisation
        assert not answer.done(), "answered before the batch was committed"
        held[0][1].append(StorageError("disk full", path="outbox.sqlite"))
        held[0][0].set()
        status, text = await answer
        assert status == 503 and "disk full" in text and "Retry-After: 60" in text, (status, text)
        answer = asyncio.ensure_future(post(s, url, batch(CHILD, records), **auth))
        await until(lambda: len(held) == 2, "the re-sent batch handed to the outbox again")
        assert not answer.done()
        held[1][0].set()
        status, text = await answer
        assert status == 200 and json.loads(text)["accepted"] == 3, text
