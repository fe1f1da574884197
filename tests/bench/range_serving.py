"""Benchmark: serving one 50 MB artifact, the gateway beside nginx (sendfile on), same file, same run.

Run: ``python tests/bench/range_serving.py [--size-mb 50] [--seconds 8] [--connections 64]``

Two workloads with ``wrk`` (Debian) at 64 connections: random 1 MiB ranges (a Lua script sets a
random ``Range`` per request) and whole-file downloads. For each server: requests/s, GB served, and
CPU-seconds of the server process(es) per GB served (psutil, before/after). wrk runs on the same two
cores (``-t 2``), so both servers share the machine with it alike. Goal: ours at most 1.5x nginx's
CPU-seconds per GB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work, cpu_seconds, gateway, wrk  # noqa: E402
from tests.peers import nginx  # noqa: E402

RANGES_LUA = """
local size = %d
local path = "%s"
math.randomseed(os.time())
request = function()
  local s = math.random(0, size - 1048576)
  return wrk.format("GET", path, {["Range"] = "bytes=" .. s .. "-" .. (s + 1048575)})
end
"""


def measure(
    label: str, url: str, procs: list[psutil.Process], seconds: int, conns: int, lua: Path | None
) -> dict[str, float]:
    c0 = cpu_seconds(procs)
    run = wrk(url, seconds=seconds, connections=conns, lua=lua, timeout_s=30)
    cpu = cpu_seconds(procs) - c0
    gb = run.bytes_read / 1e9
    return {"rps": run.rps, "gb": gb, "cpu": cpu, "cpu_per_gb": cpu / gb if gb else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    work = bench_work("range-bench-")
    model = work.root / "model.bin"
    model.write_bytes(os.urandom(args.size_mb << 20))
    size = model.stat().st_size
    manifest = registry.publish(
        work.registry, model, work.private_key, model_id="detector", version="1.0.0", site="bench"
    )
    path = "/" + manifest["artifact_url"].lstrip("/")
    with gateway(work, str(work.registry)) as (base, gw_proc):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + path, timeout=30) as r:
                    assert hashlib.sha256(r.read()).hexdigest() == manifest["sha256"]
                    break
            except OSError:
                time.sleep(0.2)
        lua = work.root / "ranges.lua"
        lua.write_text(RANGES_LUA % (size, path))
        results: dict[tuple[str, str], dict[str, float]] = {}
        with nginx(work.registry, workers=1) as ng:
            ng_procs = [psutil.Process(ng.proc.pid), *psutil.Process(ng.proc.pid).children()]
            for workload, script in (("1 MiB ranges", lua), ("whole file", None)):
                results[("ours", workload)] = measure(
                    "ours", base + path, [gw_proc], args.seconds, args.connections, script
                )
                results[("nginx", workload)] = measure(
                    "nginx", ng.url + path, ng_procs, args.seconds, args.connections, script
                )
        print(
            f"{size >> 20} MB artifact, wrk -t 2 -c {args.connections} -d {args.seconds}s on the same 2 cores; nginx 1 worker, sendfile on"
        )
        print(f"{'workload':14} {'server':6} {'req/s':>9} {'GB':>7} {'CPU-s':>7} {'CPU-s/GB':>9}")
        for workload in ("1 MiB ranges", "whole file"):
            for server in ("ours", "nginx"):
                r = results[(server, workload)]
                print(
                    f"{workload:14} {server:6} {r['rps']:>9.0f} {r['gb']:>7.1f} {r['cpu']:>7.2f} {r['cpu_per_gb']:>9.3f}"
                )
            o, n = results[("ours", workload)], results[("nginx", workload)]
            print(
                f"{workload:14} ratio  req/s {o['rps'] / n['rps']:.2f}x, CPU-s/GB {o['cpu_per_gb'] / n['cpu_per_gb']:.2f}x (goal <= 1.5x)"
            )


if __name__ == "__main__":
    main()
