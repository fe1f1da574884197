"""The uplink relay and the child-gateway announcements of a parent gateway, attacked:

- a forged 740,000-record gzip batch (1.9 MB on the wire) is refused without stalling the event
  loop or eating the memory (``/healthz`` answers within 100 ms all along, measured), and a full
  20,000-record batch is journalled without stalling it either (a real ``ota-gateway serve``);
- each child gateway relays with its own credential, for its own site only; a device token
  cannot relay; a flood of relayed records is answered 503 with ``Retry-After`` at the child's
  quota or a full outbox, and never sheds a local record a device was acknowledged for (seeded
  runs of devices and two children posting at once; the outbox file read afterwards);
- ``X-OTA-Gateway`` with a device token lists nothing; a full inventory never loses a device for
  a child gateway's entry.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running
from tests.peers import free_port, gateway_process, serve_args, stop, wait_port

pytestmark = pytest.mark.slow  # a long fault-injection run: SLOW_TESTS=1 runs it (a .ci/run step)

A, B = "line-1", "line-2"
SECRET_A, SECRET_B = "a-secret-of-line-1-0123", "b-secret-of-line-2-4567"
DEVICE_TOKEN = "the-site-device-token"
CHILDREN = {"child_sites": (A, B), "child_tokens": (f"{A}={SECRET_A}", f"{B}={SECRET_B}")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}


def batch(site: str, records: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps({"site": site, "records": records}).encode())


async def post(
    s: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, str]:
    async with s.post(url, data=io.BytesIO(body), headers=headers) as r:
        return r.status, await r.text(), r.headers.get("Retry-After", "")


# -- a forged batch does not stall the loop --------------------------------------------------------------


def forged(n: int) -> bytes:
    """``n`` tiny records: 740,000 of them are ~31 MB of JSON, 1.9 MB of gzip."""
    parts = [b'{"site":"line-1","records":[']
    parts.append(b",".join(b'{"seq":%d,"kind":"x","at":0,"body":{}}' % i for i in range(1, n + 1)))
    parts.append(b"]}")
    return gzip.compress(b"".join(parts), 6)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@contextmanager
def parent(reg: Registry, tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        "OTA_GATEWAY_MIRROR__CHILD_SITES": f'["{A}", "{B}"]',
        "OTA_GATEWAY_MIRROR__CHILD_TOKENS": f'["{A}={SECRET_A}", "{B}={SECRET_B}"]',
        "OTA_GATEWAY_DEVICES__ACCESS": '"token"',
        "OTA_GATEWAY_DEVICES__SITE_TOKEN": f'"{DEVICE_TOKEN}"',
        "OTA_GATEWAY_UPLINK__INGEST_URL": f'"http://127.0.0.1:{free_port()}/ingest"',  # nobody there
    }
    args = serve_args(tmp / "parent", str(reg.root), port, site="plant", trusted_key=reg.public_key)
    proc = gateway_process(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)


async def slowest_healthz(url: str, done: asyncio.Event) -> list[float]:
    """Latencies of ``GET /healthz`` asked every 20 ms until ``done``."""
    out: list[float] = []
    async with aiohttp.ClientSession() as s:
        while not done.is_set():
            started = time.monotonic()
            async with s.get(f"{url}/healthz") as r:
                assert r.status == 200
                await r.read()
            out.append(time.monotonic() - started)
            await asyncio.sleep(0.02)  # the probe's pace, not a synchronisation
    return out


async def timed_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, list[float]]:
    done = asyncio.Event()
    probe = asyncio.ensure_future(slowest_healthz(url, done))
    await asyncio.sleep(0.2)  # the probe runs before the post starts
    try:
        async with aiohttp.ClientSession() as s:
            status, text, _ = await post(s, f"{url}/uplink/batches", body, headers)
    finally:
        done.set()
    return status, text, await probe


async def test_a_forged_huge_batch_neither_stalls_the_loop_nor_eats_the_memory(
    reg: Registry, tmp_path: Path
) -> None:
    body = forged(740_000)
    assert len(body) < 2_500_000
    big = [
        {"seq": i, "kind": "sample", "at": float(i), "body": {"pad": "x" * 400, "i": i}}
        for i in range(1, 20_001)
    ]
    with parent(reg, tmp_path) as (url, proc):
        before = peak_rss_kb(proc.pid)
        status, text, latencies = await timed_post(url, body, bearer(SECRET_A))
        grew_mb = (peak_rss_kb(proc.pid) - before) / 1024
        print(
            f"forged: {status}, healthz max {max(latencies) * 1000:.1f} ms over {len(latencies)}, +{grew_mb:.0f} MB"
        )
        assert status == 413 and "20000" in text, (status, text)
        assert max(latencies) < 0.1, f"the loop stalled {max(latencies) * 1000:.0f} ms"
        assert grew_mb < 250, f"peak memory grew {grew_mb:.0f} MB"
        status, text, latencies = await timed_post(url, batch(A, big), bearer(SECRET_A))
        print(f"20,000 records: {status}, healthz max {max(latencies) * 1000:.1f} ms over {len(latencies)}")
        assert status == 200 and json.loads(text)["accepted"] == 20_000, (status, text)
        assert max(latencies) < 0.1, f"the loop stalled {max(latencies) * 1000:.0f} ms"


# -- credentials bound to a site; quotas instead of shedding ------------------------------------------------


def outbox_kinds(data: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Records per kind, relayed bytes per child site, and drops per kind, from the outbox file."""
    db = sqlite3.connect(data / "outbox.sqlite")
    try:
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall())
        held = dict(db.execute("SELECT json_extract(body, '$.site'), SUM(size) FROM records "
                               "WHERE kind = 'relay' GROUP BY 1").fetchall())  # fmt: skip
        drops = dict(db.execute("SELECT kind, SUM(count) FROM drops GROUP BY kind").fetchall())
        return kinds, held, drops
    finally:
        db.close()


def metrics(i: int) -> dict[str, Any]:
    return {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10, "num_errors": 0,
            "avg_latency_ms": float(i), "cpu_percent": 10.0, "ram_percent": 10.0}  # fmt: skip


async def test_a_device_token_cannot_relay_and_a_child_only_for_its_own_site(
    reg: Registry, tmp_path: Path
) -> None:
    settings = gateway_settings(reg, tmp_path / "data", mirror=CHILDREN,
                                devices={"access": "token", "site_token": DEVICE_TOKEN})  # fmt: skip
    one = [{"seq": 1, "kind": "sample", "at": 1.0, "body": {}}]
    async with running(settings) as gw, aiohttp.ClientSession() as s:
        url = base_url(gw) + "/uplink/batches"
        status, text, _ = await post(s, url, batch(A, one), {"Content-Encoding": "gzip"})
        assert status == 401, text
        status, text, _ = await post(s, url, batch(A, one), bearer(DEVICE_TOKEN))
        assert status == 403 and "device credential cannot relay" in text, text
        status, text, _ = await post(s, url, batch(A, one), bearer(SECRET_B))
        assert status == 403 and "cannot relay for 'line-1'" in text, text
        status, text, _ = await post(s, url, batch(A, one), bearer(SECRET_A))
        assert status == 200, text
        async with s.get(base_url(gw) + "/index.json", headers=bearer(SECRET_B)) as r:
            assert r.status in (200, 404)  # a child's own credential reads what a device may


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_relayed_records_never_shed_acknowledged_local_ones(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    quota = 256 << 10
    settings = gateway_settings(
        reg, tmp_path / "data", mirror=CHILDREN,
        devices={"access": "token", "site_token": DEVICE_TOKEN},
        uplink={"ingest_url": f"http://127.0.0.1:{free_port()}/ingest", "outbox_max_bytes": 2 << 20,
                "relay_quota_bytes": quota},
    )  # fmt: skip
    acked = 0
    refused: list[tuple[str, str]] = []

    async def device(s: aiohttp.ClientSession, base: str, n: int) -> None:
        nonlocal acked
        for i in range(n):
            async with s.post(f"{base}/devices/cam-{i % 5}/metrics", json=metrics(i),
                              headers={"Authorization": f"Bearer {DEVICE_TOKEN}"}) as r:  # fmt: skip
                assert r.status == 200, await r.text()
                acked += 1
            await asyncio.sleep(rng.uniform(0, 0.005))  # random instants between the posts

    async def child(s: aiohttp.ClientSession, base: str, site: str, secret: str) -> None:
        seq = 0
        while len([r for r in refused if r[0] == site]) < 3:
            n = rng.randrange(1, 800)
            records = [{"seq": seq + i, "kind": "sample", "at": 1.0, "body": {"pad": "y" * rng.randrange(10, 300)}}
                       for i in range(1, n + 1)]  # fmt: skip
            status, text, retry = await post(
                s, f"{base}/uplink/batches", batch(site, records), bearer(secret)
            )
            if status == 503:
                assert retry and "retry later" in text, (status, text, retry)
                refused.append((site, text))
            else:
                assert status == 200, (status, text)
                seq += n

    async with running(settings) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        await asyncio.gather(device(s, base, 300), child(s, base, A, SECRET_A), child(s, base, B, SECRET_B))
        await device(s, base, 50)  # and after the children's floods, devices are still acknowledged
    kinds, held, drops = outbox_kinds(tmp_path / "data")
    assert kinds.get("sample", 0) == acked == 350, (kinds, acked)
    assert "sample" not in drops, drops
    assert all(b <= quota for b in held.values()) and set(held) == {A, B}, held
    assert any("quota" in text for _, text in refused), refused


# -- announcements: only a child's own credential, and never over a device ---------------------------------


async def listed(gw: Gateway) -> set[str]:
    host, port = gw.operator_addresses[0][:2]
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/devices") as r:
        assert r.status == 200
        return {d["device_id"] for d in (await r.json())["devices"]}


async def test_a_fake_gateway_announcement_evicts_no_device(reg: Registry, tmp_path: Path) -> None:
    settings = gateway_settings(reg, tmp_path / "data", mirror=CHILDREN,
                                devices={"access": "token", "site_token": DEVICE_TOKEN, "max_devices": 5})  # fmt: skip
    async with running(settings) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        device = {"Authorization": f"Bearer {DEVICE_TOKEN}"}
        for i in range(5):
            async with s.get(f"{base}/devices/cam-{i}/updates", headers=device) as r:
                assert r.status in (200, 204)
        cams = {f"cam-{i}" for i in range(5)}
        assert await listed(gw) == cams
        for i in range(20):  # any device token, any name: served, but nobody is listed
            async with s.get(f"{base}/index.json", headers={**device, "X-OTA-Gateway": f"fake-{i}"}) as r:
                assert r.status in (200, 404)
        assert await listed(gw) == cams
        for secret, site in ((SECRET_A, A), (SECRET_B, B)):  # real children: still no device goes
            async with s.get(f"{base}/index.json", headers={**bearer(secret), "X-OTA-Gateway": site}) as r:
                assert r.status in (200, 404)
        assert await listed(gw) == cams
        async with s.get(f"{base}/index.json", headers={**bearer(SECRET_A), "X-OTA-Gateway": B}) as r:
            assert r.status in (200, 404)  # A's credential does not announce B
    settings = gateway_settings(reg, tmp_path / "data2", mirror=CHILDREN,
                                devices={"access": "token", "site_token": DEVICE_TOKEN})  # fmt: skip
    async with running(settings) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        for headers in ({**bearer(SECRET_A), "X-OTA-Gateway": A}, {**bearer(SECRET_A), "X-OTA-Gateway": B},
                        {"Authorization": f"Bearer {DEVICE_TOKEN}", "X-OTA-Gateway": "fake-1"}):  # fmt: skip
            async with s.get(f"{base}/index.json", headers=headers) as r:
                assert r.status in (200, 404)
        assert await listed(gw) == {f"gateway.{A}"}
