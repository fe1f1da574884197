"""Benchmark: thousands of devices polling one gateway; long-poll wake-up when a deployment lands.

Run: ``python tests/bench/poll_fanout.py [--devices 10000] [--seconds 20]``

What it measures, all in one run on this machine (figures are only comparable within a run):

1. Upstream cost: the registry is served by nginx; the gateway polls it every ``--interval`` s. At a
   realistic rate (each device every 60 s) and at 10x, the script counts the index requests nginx
   saw per interval (goal: 1) and the artifact requests (goal: 0 after the first mirror).
2. Saturation: ``wrk`` (64 connections, random device ids) against the gateway's poll, against a
   bare aiohttp handler returning the same JSON, and against nginx returning it as a static file.
   After a warm-up (every device has polled, as on a running site), gateway and bare handler take
   turns for three rounds and the median ratio is printed (goal: at least 0.7).
3. p99 poll latency at 10x the realistic rate (from the Python load generator) and the gateway RSS.
4. Long poll: ``--long-pollers`` devices hold ``?wait=60``; a new version is published; time until
   the last one is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work, cpu_seconds, gateway, wrk  # noqa: E402
from tests.peers import free_port, nginx, wait_port  # noqa: E402

WRK_LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/devices/dev-" .. math.random(1, %d) .. "/updates?fw=1.2.0&hw=rev2")
end
"""

BARE_APP = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def h(request):
    return web.Response(body=body, content_type="application/json", headers={"Retry-After": "300"})
app = web.Application()
app.router.add_get("/devices/{id}/updates", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def paced_load(base: str, devices: int, rate_per_s: float, seconds: float) -> list[float]:
    """Poll random devices at ``rate_per_s`` for ``seconds``; return latencies in ms."""
    latencies: list[float] = []
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> None:
            dev = random.randint(1, devices)
            t0 = time.perf_counter()
            async with s.get(f"{base}/devices/dev-{dev}/updates?fw=1.2.0&hw=rev2") as r:
                await r.read()
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = set()
        start = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate_per_s) - n
            for _ in range(due):
                t = asyncio.create_task(one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            n += max(due, 0)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    return latencies


async def long_poll(base: str, count: int, publish: object) -> float:
    conn = aiohttp.TCPConnector(limit=0)
    done: list[float] = []
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:

        async def waiter(i: int) -> None:
            url = f"{base}/devices/lp-{i}/updates?fw=1.2.0&model_id=detector&model_version=1.0.0&wait=60"
            async with s.get(url) as r:
                await r.read()
                if r.status == 200:
                    done.append(time.perf_counter())

        tasks = [asyncio.create_task(waiter(i)) for i in range(count)]
        await asyncio.sleep(3)  # let every waiter connect (a benchmark, not a test)
        t0 = time.perf_counter()
        await asyncio.to_thread(publish)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
    return (max(done) - t0) if len(done) == count else float("nan")


def saturate(url: str, proc: psutil.Process, lua: Path, seconds: int = 6) -> tuple[float, float]:
    """``wrk`` against ``url``: requests per second, and the server's CPU-seconds per request."""
    cpu0 = cpu_seconds([proc])
    rps = wrk(url, seconds=seconds, lua=lua).rps
    return rps, (cpu_seconds([proc]) - cpu0) / (rps * seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--interval", type=float, default=5.0, help="gateway upstream poll interval")
    ap.add_argument("--long-pollers", type=int, default=2000)
    args = ap.parse_args()

    bench = bench_work("poll-bench-")
    work, reg = bench.root, bench.registry
    (work / "m1.bin").write_bytes(os.urandom(1 << 20))
    registry.publish(
        reg, work / "m1.bin", bench.private_key, model_id="detector", version="1.0.0", site="bench"
    )

    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with nginx(reg, workers=1) as upstream:
        env = {
            "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": str(args.interval),
            "OTA_GATEWAY_MIRROR__POLL_JITTER": "0",
            # the long-poll figure is every waiting device answered with the new version: measure
            # the fan-out, not the canary waves (which would answer only wave 0)
            "OTA_GATEWAY_GATES__ENABLED": "false",
        }
        with gateway(bench, upstream.url, env) as (base, proc):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        f"{base}/devices/dev-1/updates?fw=1.2.0",
                    ],
                    capture_output=True,
                    text=True,
                ).stdout
                if status == "200":
                    break
                time.sleep(0.2)
            print(
                f"devices: {args.devices}, gateway upstream poll interval {args.interval} s, same 2-core box"
            )

            for label, rate in (
                ("realistic (1/60 s per device)", args.devices / 60),
                ("10x", args.devices / 6),
            ):
                before = upstream.access_log()
                t0 = time.monotonic()
                lat = asyncio.run(paced_load(base, args.devices, rate, args.seconds))
                elapsed = time.monotonic() - t0
                new = upstream.access_log()[len(before) :]
                index_reqs = sum("index.json" in line for line in new)
                artifact_reqs = sum("/artifacts/" in line for line in new)
                lat.sort()
                p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
                print(
                    f"{label}: {len(lat)} polls in {elapsed:.1f} s ({len(lat) / elapsed:.0f}/s); upstream index "
                    f"requests per interval {index_reqs / (elapsed / args.interval):.2f}, artifact requests "
                    f"{artifact_reqs}; p50 {lat[len(lat) // 2]:.1f} ms, p99 {p99:.1f} ms; gateway RSS "
                    f"{proc.memory_info().rss / 2**20:.0f} MiB"
                )

            lua = work / "poll.lua"
            lua.write_text(WRK_LUA % args.devices)
            wrk(base + "/", seconds=4, lua=lua)  # warm-up: a site's devices have all polled before
            sample = subprocess.run(
                ["curl", "-s", f"{base}/devices/dev-1/updates?fw=1.2.0"], capture_output=True
            ).stdout
            (work / "answer.json").write_bytes(sample)
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_APP, str(bare_port), str(work / "answer.json")]
            )
            try:
                wait_port(bare_port)
                bare_proc = psutil.Process(bare.pid)
                bare_url = f"http://127.0.0.1:{bare_port}/"
                wrk(bare_url, seconds=2, lua=lua)
                # Alternate the two, three rounds, and take the median: this box's load drifts
                # within seconds, so one run of each measures the drift as much as the servers.
                rounds = [
                    saturate(base + "/", proc, lua) + saturate(bare_url, bare_proc, lua) for _ in range(3)
                ]
            finally:
                bare.terminate()
                bare.wait()
            for i, (ours, ours_cpu, bare_rps, bare_cpu) in enumerate(rounds, 1):
                print(
                    f"  round {i}: gateway {ours:.0f}/s {ours_cpu * 1e6:.0f} us/poll, bare aiohttp "
                    f"{bare_rps:.0f}/s {bare_cpu * 1e6:.0f} us/poll (ratio {ours / bare_rps:.2f})"
                )
            ours = statistics.median(r[0] for r in rounds)
            rps_ratio = statistics.median(r[0] / r[2] for r in rounds)
            cpu_ratio = statistics.median(r[3] / r[1] for r in rounds)
            ours_cpu = statistics.median(r[1] for r in rounds)
            bare_cpu = statistics.median(r[3] for r in rounds)
            static = work / "static"
            static.mkdir()
            os.chmod(static, 0o755)
            with nginx(
                server=f"location / {{ default_type application/json; alias {work / 'answer.json'}; }}"
            ) as ng:
                nginx_rps = wrk(ng.url + "/", seconds=8, lua=lua).rps
            print(
                f"saturation (wrk, 64 connections, median of 3 alternating rounds): gateway {ours:.0f} "
                f"polls/s; against bare aiohttp with the same JSON, ratio {rps_ratio:.2f}; nginx static "
                f"file {nginx_rps:.0f}/s (ratio {ours / nginx_rps:.3f})"
            )
            print(
                f"CPU per poll (steadier than polls/s on a busy box): gateway {ours_cpu * 1e6:.0f} us, bare "
                f"aiohttp {bare_cpu * 1e6:.0f} us (polls per CPU-second, ratio {cpu_ratio:.2f})"
            )
            print(f"gateway RSS after {args.devices} devices: {proc.memory_info().rss / 2**20:.0f} MiB")

            def publish() -> None:
                (work / "m2.bin").write_bytes(os.urandom(1 << 20))
                registry.publish(
                    reg,
                    work / "m2.bin",
                    bench.private_key,
                    model_id="detector",
                    version="1.1.0",
                    site="bench",
                )

            took = asyncio.run(long_poll(base, args.long_pollers, publish))
            print(
                f"long poll: {args.long_pollers} devices waiting; new deployment published; last answered after "
                f"{took:.2f} s (includes up to one upstream poll interval, {args.interval} s, and the 1 MiB mirror)"
            )


if __name__ == "__main__":
    main()
