"""Benchmark: cold-miss fan-in. Many devices ask at once for an artifact the site does not have yet,
behind an upstream throttled to 10 MB/s; the gateway beside nginx as a caching proxy with
``proxy_cache_lock on``, same workload, same run.

Run: ``python tests/bench/cold_miss.py [--devices 500] [--size-mb 50]``

The cold miss: the gateway starts on an empty registry; the devices are already asking for the
artifact's URL (404 until the index lands; they retry every second); at t0 the model is published
into the registry; the gateway's next index poll (0.5 s) starts the one upstream transfer, devices
get 503 with a ``Retry-After`` that follows its progress and come back then, and download when it is
verified. For nginx, the 500 devices ask the caching proxy at t0 directly.
Reported: upstream bytes for the artifact / its size (goal 1.00), how waiting devices were answered
(503s, Retry-After values, retries per device), and the time until the last device has every byte.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work, gateway  # noqa: E402
from tests.peers import nginx  # noqa: E402


def upstream_bytes(lines: list[str], path: str) -> int:
    total = 0
    for line in lines:
        if path in line and ".sig" not in line:
            m = re.search(r" (\d{3}) (\d+)$", line)
            if m:
                total += int(m.group(2))
    return total


async def devices_get(
    url: str, count: int, size: int, t0: float, honour_retry_after: bool
) -> dict[str, object]:
    conn = aiohttp.TCPConnector(limit=0)
    done: list[float] = []
    retry_afters: list[tuple[float, int]] = []
    per_device_503 = Counter[int]()
    errors = Counter[str]()
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:

        async def device(i: int) -> None:
            while True:
                try:
                    async with s.get(url) as r:
                        if r.status == 200:
                            got = 0
                            async for chunk in r.content.iter_chunked(1 << 20):
                                got += len(chunk)
                            if got != size:
                                errors["short body"] += 1
                            done.append(time.monotonic() - t0)
                            return
                        await r.read()
                        if r.status == 503 and honour_retry_after:
                            ra = int(r.headers.get("Retry-After", "1"))
                            retry_afters.append((time.monotonic() - t0, ra))
                            per_device_503[i] += 1
                            await asyncio.sleep(ra)
                            continue
                        errors[f"HTTP {r.status}"] += 1
                        await asyncio.sleep(1.0)
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] += 1
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(device(i) for i in range(count)))
    return {"done": done, "retry_afters": retry_afters, "per_device_503": per_device_503, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--size-mb", type=int, default=50)
    args = ap.parse_args()
    bench = bench_work("cold-miss-")
    work, keys, reg = bench.root, bench.keys, bench.registry
    model = work / "model.bin"
    model.write_bytes(os.urandom(args.size_mb << 20))
    size = model.stat().st_size
    artifact = "/artifacts/detector/1.0.0/model.bin"

    with nginx(reg, limit_rate="10m") as upstream:
        env = {"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5", "OTA_GATEWAY_MIRROR__POLL_JITTER": "0"}
        with gateway(bench, upstream.url, env) as (base, _proc):

            async def run_ours() -> dict[str, object]:
                t0 = time.monotonic()
                task = asyncio.create_task(devices_get(base + artifact, args.devices, size, t0, True))
                await asyncio.sleep(1.0)  # the devices are already asking (404) when the model lands
                await asyncio.to_thread(
                    registry.publish,
                    reg,
                    model,
                    keys / "private.pem",
                    model_id="detector",
                    version="1.0.0",
                    site="bench",
                )
                return await task

            ours = asyncio.run(run_ours())
        ours_up = upstream_bytes(upstream.access_log(), artifact)

        # The peer: nginx as a caching reverse proxy with proxy_cache_lock, in front of the same upstream.
        before = len(upstream.access_log())
        cache = work / "cache"
        cache.mkdir()
        os.chmod(cache, 0o777)
        server = (
            f"location / {{ proxy_pass {upstream.url}; proxy_cache c; proxy_cache_lock on; "
            "proxy_cache_valid 200 1h; proxy_buffering on; }"
        )
        with nginx(
            server=server, extra_http=f"proxy_cache_path {cache} keys_zone=c:10m max_size=2g;", workers=1
        ) as proxy:
            t0 = time.monotonic()
            peer = asyncio.run(devices_get(proxy.url + artifact, args.devices, size, t0, False))
        peer_up = upstream_bytes(upstream.access_log()[before:], artifact)

    def summary(label: str, r: dict[str, object], up: int) -> None:
        done = r["done"]
        assert isinstance(done, list)
        print(f"{label}: upstream bytes / artifact size = {up / size:.2f}; last device complete after {max(done):.1f} s; "
              f"{len(done)}/{args.devices} complete; errors {dict(r['errors'])}")  # type: ignore[call-overload]  # fmt: skip

    print(f"{args.devices} devices, {size >> 20} MB artifact, upstream nginx limit_rate 10 MB/s")
    summary("gateway", ours, ours_up)
    ra = ours["retry_afters"]
    per = ours["per_device_503"]
    assert isinstance(ra, list) and isinstance(per, Counter)
    if ra:
        by_second = Counter(int(t) for t, _ in ra)
        print(f"  503 answers: {len(ra)} in all, {statistics.mean(per.values()):.1f} per device (max {max(per.values())}); "
              f"Retry-After values seen: {sorted(Counter(v for _, v in ra).items())}")  # fmt: skip
        print(f"  503s per second since t0 (the devices' return visits): {sorted(by_second.items())}")
    summary("nginx proxy_cache_lock", peer, peer_up)


if __name__ == "__main__":
    main()
