"""Benchmark: cold-miss fan-in. Many devices ask at once for an artifact the site does not have yet,
behind an upstream throttled to 10 MB/s; the gateway beside nginx as a caching proxy with
``proxy_cache_lock on``, same workload, same run.

Run: ``python tests/bench/cold_miss.py [--devices 500] [--size-mb 50] [--chunk-size 1048576]``

The cold miss: the gateway starts on an empty registry; the devices are already asking for the
artifact's URL (404 until the index lands; they retry every second); at t0 the model is published
into the registry with its signed chunk list; the gateway's next index poll (0.5 s) starts the one
upstream transfer, and the devices stream the chunks as they are verified. For nginx, the devices
ask the caching proxy at t0 directly. Every device re-hashes every chunk it gets against the signed
chunk list (in every run, so the clients do the same work for both).

Reported, all from this one run:

* last device complete, for ours (from t0), for nginx, and against ``upstream fill time + LAN
  transfer time``: the fill is one direct download from the upstream, the LAN transfer the same
  devices downloading the artifact from the gateway once it is verified;
* time to first byte for a waiting device (a device polling the URL every 20 ms: from the moment
  the gateway first answers it 200, to the first body byte), against the upstream's first chunk
  (a direct request for the first chunk of the upstream) and one chunk time;
* upstream bytes for the artifact / its size (goal 1.00);
* bytes served that are not part of a verified chunk (goal 0), and how 503s were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work, gateway  # noqa: E402
from tests.peers import nginx  # noqa: E402

RATE = 10 << 20  # the upstream's limit_rate 10m


def upstream_bytes(lines: list[str], path: str) -> int:
    total = 0
    for line in lines:
        if path + " " in line:  # the artifact itself, not its .sig or .chunks
            m = re.search(r" (\d{3}) (\d+)$", line)
            if m:
                total += int(m.group(2))
    return total


@dataclass
class Chunks:
    """The signed chunk list, as a device checks against it."""

    digests: list[bytes]
    size: int
    bad_bytes: int = 0

    def check(self, body: bytes, index: int) -> None:
        if hashlib.sha256(body).digest() != self.digests[index]:
            self.bad_bytes += len(body)

    async def rehash(self, pieces: AsyncIterator[bytes], on_first: Callable[[], None]) -> int:
        """Re-hash a body chunk by chunk as its pieces come (``on_first`` at the first byte);
        returns its length."""
        got, buf, index = 0, bytearray(), 0
        async for piece in pieces:
            if got == 0 and piece:
                on_first()
            got += len(piece)
            buf += piece
            while len(buf) >= self.size:
                self.check(bytes(buf[: self.size]), index)
                del buf[: self.size]
                index += 1
        if buf:
            self.check(bytes(buf), index)
        return got


@dataclass
class Run:
    done: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)  # since each device's request
    retry_afters: list[tuple[float, int]] = field(default_factory=list)
    per_device_503: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


async def read_checked(r: aiohttp.ClientResponse, chunks: Chunks, run: Run, asked: float) -> int:
    """The body, re-hashed chunk by chunk as it comes; returns its length."""
    return await chunks.rehash(r.content.iter_any(), lambda: run.first_bytes.append(time.monotonic() - asked))


async def devices_get(
    url: str, count: int, size: int, t0: float, chunks: Chunks, honour_retry_after: bool
) -> Run:
    run = Run()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:

        async def device(i: int) -> None:
            while True:
                try:
                    asked = time.monotonic()
                    async with s.get(url) as r:
                        if r.status == 200:
                            if await read_checked(r, chunks, run, asked) != size:
                                run.errors["short body"] += 1
                                continue  # cut off: ask again
                            run.done.append(time.monotonic() - t0)
                            return
                        await r.read()
                        if r.status == 503 and honour_retry_after:
                            ra = int(r.headers.get("Retry-After", "1"))
                            run.retry_afters.append((time.monotonic() - t0, ra))
                            run.per_device_503[i] += 1
                            await asyncio.sleep(ra)
                            continue
                        run.errors[f"HTTP {r.status}"] += 1
                        await asyncio.sleep(1.0)
                except aiohttp.ClientError as exc:
                    run.errors[type(exc).__name__] += 1
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(device(i) for i in range(count)))
    return run


async def waiting_device(url: str, chunks: Chunks, t0: float) -> tuple[float, float, float]:
    """Poll every 20 ms until the gateway answers 200; returns when (since t0), the time from that
    answer to its first body byte, and the first byte since t0."""
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(url) as r:
                if r.status == 200:
                    answered = time.monotonic()
                    firsts: list[float] = []
                    await chunks.rehash(
                        r.content.iter_any(), lambda firsts=firsts: firsts.append(time.monotonic())
                    )
                    first = firsts[0]
                    return answered - t0, first - answered, first - t0
                await r.read()
            await asyncio.sleep(0.02)


async def direct(url: str, nbytes: int | None) -> float:
    """Seconds to get the first ``nbytes`` (None: all) of ``url`` straight from the upstream."""
    headers = {"Range": f"bytes=0-{nbytes - 1}"} if nbytes else {}
    async with aiohttp.ClientSession() as s:
        start = time.monotonic()
        async with s.get(url, headers=headers) as r:
            async for _ in r.content.iter_any():
                pass
        return time.monotonic() - start


def summary(label: str, r: Run, devices: int, up: int | None, size: int) -> None:
    ratio = f"upstream bytes / artifact size = {up / size:.2f}; " if up is not None else ""
    print(f"{label}: {ratio}last device complete after {max(r.done):.1f} s; "
          f"{len(r.done)}/{devices} complete; errors {dict(r.errors)}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--chunk-size", type=int, default=registry.DEFAULT_CHUNK_BYTES)
    args = ap.parse_args()
    bench = bench_work("cold-miss-")
    work, keys, reg = bench.root, bench.keys, bench.registry
    model = work / "model.bin"
    model.write_bytes(os.urandom(args.size_mb << 20))
    size = model.stat().st_size
    data = model.read_bytes()
    digests = [
        hashlib.sha256(data[i : i + args.chunk_size]).digest() for i in range(0, size, args.chunk_size)
    ]
    del data
    artifact = "/artifacts/detector/1.0.0/model.bin"
    checks = Chunks(digests, args.chunk_size)

    with nginx(reg, limit_rate="10m") as upstream:
        env = {"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5", "OTA_GATEWAY_MIRROR__POLL_JITTER": "0"}
        with gateway(bench, upstream.url, env) as (base, _proc):

            async def run_ours() -> tuple[Run, tuple[float, float, float]]:
                start = time.monotonic()
                crowd = asyncio.create_task(
                    devices_get(base + artifact, args.devices, size, start, checks, True)
                )
                await asyncio.sleep(1.0)  # the devices are already asking (404) when the model lands
                t0 = time.monotonic()
                await asyncio.to_thread(
                    registry.publish,
                    reg,
                    model,
                    keys / "private.pem",
                    model_id="detector",
                    version="1.0.0",
                    site="bench",
                    chunk_size=args.chunk_size,
                )
                waiting = await waiting_device(base + artifact, checks, t0)
                run = await crowd
                run.done = [d - (t0 - start) for d in run.done]  # since the model was published
                return run, waiting

            ours, (stream_open, ttfb, first_since_t0) = asyncio.run(run_ours())
            ours_up = upstream_bytes(upstream.access_log(), artifact)
            # The LAN alone: the same devices, the artifact already verified here.
            lan = asyncio.run(
                devices_get(base + artifact, args.devices, size, time.monotonic(), checks, True)
            )
        fill_s = asyncio.run(direct(upstream.url + artifact, None))
        first_chunk_s = asyncio.run(direct(upstream.url + artifact, args.chunk_size))

        # The peer: nginx as a caching reverse proxy with proxy_cache_lock, in front of the same upstream.
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
            mark = len(upstream.access_log())
            peer = asyncio.run(
                devices_get(
                    proxy.url + artifact,
                    args.devices,
                    size,
                    time.monotonic(),
                    Chunks(digests, args.chunk_size),
                    False,
                )
            )
        peer_up = upstream_bytes(upstream.access_log()[mark:], artifact)

    chunk_time = args.chunk_size / RATE
    lan_s = max(lan.done)
    print(f"{args.devices} devices, {size >> 20} MB artifact in {len(digests)} chunks of {args.chunk_size} bytes, "
          f"upstream nginx limit_rate 10 MB/s")  # fmt: skip
    summary("gateway (verified streaming)", ours, args.devices, ours_up, size)
    summary("nginx proxy_cache_lock", peer, args.devices, peer_up, size)
    print(f"  upstream fill time (one direct download) {fill_s:.1f} s + LAN transfer time (the same devices, "
          f"artifact verified) {lan_s:.1f} s = {fill_s + lan_s:.1f} s")  # fmt: skip
    print(f"  last device complete: ours / nginx = {max(ours.done) / max(peer.done):.2f} (goal < 1); "
          f"ours / (fill + LAN) = {max(ours.done) / (fill_s + lan_s):.2f} (goal <= 1.05)")  # fmt: skip
    print(f"  time to first byte, a waiting device: {ttfb * 1000:.0f} ms after the gateway first answered 200 "
          f"({stream_open:.2f} s after publish); the upstream's first chunk takes {first_chunk_s * 1000:.0f} ms, "
          f"one chunk time is {chunk_time * 1000:.0f} ms: difference {(ttfb - first_chunk_s) * 1000:.0f} ms "
          f"(goal within one chunk time); since publish: first byte after {first_since_t0:.2f} s "
          f"(the gateway's index poll every 0.5 s included)")  # fmt: skip
    print(f"  time to first byte over the crowd (from each request): median {statistics.median(ours.first_bytes):.2f} s, "
          f"max {max(ours.first_bytes):.2f} s")  # fmt: skip
    print(
        f"  bytes served that are not part of a verified chunk (devices re-hash every chunk): {checks.bad_bytes}"
    )
    ra = ours.retry_afters
    if ra:
        per = ours.per_device_503
        print(f"  503 answers: {len(ra)} in all, {statistics.mean(per.values()):.1f} per device (max {max(per.values())}); "
              f"Retry-After values seen: {sorted(Counter(v for _, v in ra).items())}")  # fmt: skip
    else:
        print("  503 answers: none (every waiting device streamed)")


if __name__ == "__main__":
    main()
