"""Benchmark: serving one 50 MB artifact, the gateway beside nginx (sendfile on), same file, same run.

Run: ``python tests/bench/range_serving.py [--rounds 3] [--seconds 8] [--before DIR]``

Two workloads with ``wrk`` (Debian) at 64 connections: random 1 MiB ranges (a Lua script sets a
random ``Range`` per request) and whole-file downloads. For each server: requests/s, GB served,
CPU-seconds of the server process(es) per GB served (psutil, before/after), and the whole box's
busy CPU-seconds per GB (``/proc/stat``: the server, wrk, and the kernel's packet work, which on
loopback is charged to whichever process or softirq runs it). wrk runs on the same two cores
(``-t 2``), so the servers share the machine with it alike.

Two nginx configurations, both with ``sendfile on`` and one worker: ``nginx`` with ``tcp_nopush
on`` (the usual advice for sendfile, and the issue's peer), and ``ng-np`` with it off. They spend
their CPU differently: ``tcp_nopush`` corks the socket around the response, which costs the process
about twice the system time per range; without it the head leaves as a packet of its own, the
process's CPU drops and the box's rises (more packets for the kernel and wrk). A server's own
CPU-s/GB alone would flatter ``ng-np``; the box's column shows where the work went.

The servers take turns within each round (ours, nginx, ours, ...), so a box that others load
slows them alike; the ratios are taken within each round and their median printed. ``--before
DIR`` adds the gateway of another checkout (e.g. ``git archive main | tar -x -C DIR``) to every
round, for a before/after from one run. Goal (issue 27): at least 0.95x nginx's requests per
second for 1 MiB ranges, at most 1.1x its CPU-seconds per GB for ranges and whole files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import Work, bench_work, box_busy_seconds, cpu_seconds, gateway, wrk  # noqa: E402
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
WORKLOADS = ("1 MiB ranges", "whole file")
GOALS = {"rps": 0.95, "cpu_per_gb": 1.1}  # ours / nginx: at least, at most

Figures = dict[str, float]


def measure(url: str, procs: list[psutil.Process], seconds: int, conns: int, lua: Path | None) -> Figures:
    c0, b0 = cpu_seconds(procs), box_busy_seconds()
    run = wrk(url, seconds=seconds, connections=conns, lua=lua, timeout_s=30)
    cpu, box = cpu_seconds(procs) - c0, box_busy_seconds() - b0
    gb = run.bytes_read / 1e9 or float("nan")
    return {"rps": run.rps, "gb": gb, "cpu": cpu, "cpu_per_gb": cpu / gb, "box_per_gb": box / gb}


def first_download(base: str, path: str, sha256: str) -> None:
    """Wait until the gateway serves the verified artifact (mirrored, checked)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + path, timeout=30) as r:
                if hashlib.sha256(r.read()).hexdigest() == sha256:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}{path} never served the verified artifact")
        time.sleep(0.2)


def servers(stack: ExitStack, work: Work, path: str, sha256: str, before: Path | None) -> dict[str, tuple[str, list[psutil.Process]]]:  # fmt: skip
    """Each server's base URL and processes: ours, nginx and, with ``before``, that checkout's."""
    out: dict[str, tuple[str, list[psutil.Process]]] = {}
    base, proc = stack.enter_context(gateway(work, str(work.registry)))
    first_download(base, path, sha256)
    out["ours"] = (base, [proc])
    if before is not None:
        base, proc = stack.enter_context(
            gateway(bench_work_for(work, "before"), str(work.registry), checkout=before)
        )
        first_download(base, path, sha256)
        out["before"] = (base, [proc])
    ng = stack.enter_context(nginx(work.registry, workers=1))
    out["nginx"] = (ng.url, [psutil.Process(ng.proc.pid), *psutil.Process(ng.proc.pid).children()])
    ng = stack.enter_context(
        nginx(server=f"location / {{ root {work.registry}; tcp_nopush off; }}", workers=1)
    )
    out["ng-np"] = (ng.url, [psutil.Process(ng.proc.pid), *psutil.Process(ng.proc.pid).children()])
    return out


def bench_work_for(work: Work, name: str) -> Work:
    """The same keys and registry, a data folder of its own."""
    root = work.root / name
    root.mkdir(exist_ok=True)
    return Work(root, work.keys, work.registry)


PEERS = ("nginx", "ng-np")
KEYS = ("rps", "cpu_per_gb", "box_per_gb")


def report(rounds: list[dict[tuple[str, str], Figures]], names: list[str]) -> None:
    print(f"\n{'workload':14} {'server':11} {'req/s':>9} {'CPU-s/GB':>9} {'box CPU-s/GB':>13}"
          f"   (medians of {len(rounds)} rounds; ratios: median of the rounds' ratios)")  # fmt: skip
    for workload in WORKLOADS:
        for server in names:
            m = {k: statistics.median(r[(server, workload)][k] for r in rounds) for k in KEYS}
            print(
                f"{workload:14} {server:11} {m['rps']:>9.0f} {m['cpu_per_gb']:>9.3f} {m['box_per_gb']:>13.3f}"
            )
        for server in (n for n in names if n not in PEERS):
            for peer in PEERS:
                ratio = {
                    k: statistics.median(r[(server, workload)][k] / r[(peer, workload)][k] for r in rounds)
                    for k in KEYS
                }
                print(
                    f"{workload:14} {f'{server}/{peer}':11} {ratio['rps']:>8.2f}x {ratio['cpu_per_gb']:>8.2f}x"
                    f" {ratio['box_per_gb']:>12.2f}x"
                )
    print(
        f"goal (issue 27, against nginx with tcp_nopush on): req/s >= {GOALS['rps']}x for ranges, "
        f"CPU-s/GB <= {GOALS['cpu_per_gb']}x for both"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, default=None, help="another checkout's gateway, in every round")
    args = ap.parse_args()
    work = bench_work("range-bench-")
    model = work.root / "model.bin"
    model.write_bytes(os.urandom(args.size_mb << 20))
    size = model.stat().st_size
    manifest = registry.publish(
        work.registry, model, work.private_key, model_id="detector", version="1.0.0", site="bench"
    )
    path = "/" + manifest["artifact_url"].lstrip("/")
    lua = work.root / "ranges.lua"
    lua.write_text(RANGES_LUA % (size, path))
    print(
        f"{size >> 20} MB artifact, wrk -t 2 -c {args.connections} -d {args.seconds}s on the same 2 cores; "
        f"nginx 1 worker, sendfile on, tcp_nopush on (nginx) and off (ng-np); servers take turns, {args.rounds} rounds"
    )
    print(
        f"{'round':5} {'workload':14} {'server':7} {'req/s':>9} {'GB':>7} {'CPU-s':>7} {'CPU-s/GB':>9} {'box/GB':>7}"
    )
    rounds: list[dict[tuple[str, str], Figures]] = []
    with ExitStack() as stack:
        running = servers(stack, work, path, manifest["sha256"], args.before)
        for n in range(1, args.rounds + 1):
            figures: dict[tuple[str, str], Figures] = {}
            for workload, script in zip(WORKLOADS, (lua, None), strict=True):
                order = list(running) if n % 2 else list(reversed(running))  # who goes first alternates
                for server in order:
                    base, procs = running[server]
                    r = measure(base + path, procs, args.seconds, args.connections, script)
                    figures[(server, workload)] = r
                    print(
                        f"{n:<5} {workload:14} {server:7} {r['rps']:>9.0f} {r['gb']:>7.1f} {r['cpu']:>7.2f}"
                        f" {r['cpu_per_gb']:>9.3f} {r['box_per_gb']:>7.3f}",
                        flush=True,
                    )
            rounds.append(figures)
    report(rounds, list(running))


if __name__ == "__main__":
    main()
