"""Memory per idle connection, and a reconnect storm, for ours vs bare amqtt vs mosquitto.

    /work/venv/bin/python tests/bench/mqtt_memory.py [--counts 1000,5000,10000] [--storm 3000]

Each broker runs in its own process; a second process (this one) opens N idle MQTT 3.1.1
connections (CONNECT with credentials, CONNACK awaited, keep-alive 600 s) and the broker's RSS is
read before and after: (RSS with N - RSS idle) / N. RLIMIT_NOFILE is raised to the hard limit.
The storm (ours only): S devices connected, all drop and reconnect within 10 s; all must be
accepted, then all leave and RSS is compared with the baseline. Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from mqttpeers import broker, free_port, open_client, raise_nofile, rss_bytes


async def open_many(port: int, n: int, prefix: str = "d") -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(200)  # connection attempts in flight

    async def one(i: int) -> None:
        async with sem:
            _, writer = await open_client(port, f"{prefix}{i}")
            writers.append(writer)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120)
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.transport.abort()
    await asyncio.sleep(0.1)  # let the loop run the connection_lost callbacks


async def warm_up(port: int) -> None:
    """One round so allocator pools and code paths exist before the baseline is read."""
    await close_all(await open_many(port, 200, "w"))


def settle(pid: int, seconds: float = 2.0) -> int:
    time.sleep(seconds)  # let the broker finish accepting / cleaning up before reading RSS
    return rss_bytes(pid)


def per_connection(kind: str, counts: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    port = free_port()
    with broker(kind, port) as proc:
        asyncio.run(warm_up(port))
        base = settle(proc.pid)
        for n in counts:

            async def measure(n: int = n) -> float:
                writers = await open_many(port, n)
                rss = await asyncio.to_thread(settle, proc.pid)
                await close_all(writers)
                return (rss - base) / n

            try:
                out[n] = asyncio.run(measure())
            except Exception as exc:
                print(f"{kind}: {n} connections failed: {exc!r}")
                break
            print(f"{kind:10s} {n:6d} idle connections: {out[n] / 1024:6.1f} KB per connection", flush=True)
            settle(proc.pid, 3.0)
    return out


def storm(n: int) -> None:
    port = free_port()
    with broker("ours", port) as proc:
        asyncio.run(warm_up(port))
        base = settle(proc.pid)

        async def run() -> tuple[int, float, int]:
            writers = await open_many(port, n)
            await close_all(writers)  # every device drops at once ...
            start = time.perf_counter()
            writers = await open_many(port, n)  # ... and all come back
            elapsed = time.perf_counter() - start
            peak = rss_bytes(proc.pid)
            await close_all(writers)
            return len(writers), elapsed, peak

        # Three rounds: Python's allocator keeps freed memory for reuse, so RSS after the first
        # round stays at its high-water mark; a leak would show as growth from round to round.
        for round_no in (1, 2, 3):
            accepted, elapsed, peak = asyncio.run(run())
            after = settle(proc.pid, 4.0)
            print(
                f"storm round {round_no}: {accepted}/{n} reconnected in {elapsed:.1f} s; RSS baseline "
                f"{base / 2**20:.1f} MiB, all connected {peak / 2**20:.1f} MiB, after all left "
                f"{after / 2**20:.1f} MiB (+{(after - base) / 2**20:.1f} MiB)",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1000,5000,10000")
    ap.add_argument("--storm", type=int, default=3000)
    ap.add_argument("--only", default="ours,amqtt,mosquitto")
    args = ap.parse_args()
    hard = raise_nofile()
    counts = [n for n in map(int, args.counts.split(",")) if n + 500 < hard]
    results = {kind: per_connection(kind, counts) for kind in args.only.split(",")}
    for n in counts:
        ours = results.get("ours", {}).get(n)
        for peer in ("amqtt", "mosquitto"):
            theirs = results.get(peer, {}).get(n)
            if ours and theirs:
                print(
                    f"{n:6d}: ours {ours / 1024:.1f} KB, {peer} {theirs / 1024:.1f} KB, ratio {ours / theirs:.2f}"
                )
    if args.storm:
        storm(args.storm)


if __name__ == "__main__":
    main()
