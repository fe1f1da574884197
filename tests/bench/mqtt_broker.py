"""Benchmark: the embedded broker beside bare amqtt and mosquitto, in one run on this machine.

Run: ``python tests/bench/mqtt_broker.py [--messages 20000] [--publishers 4] [--conns 1000,5000]
[--kinds ...] [--rounds N]``. Issue 27's embedded-broker figures in one command, ours against
mosquitto from the same run (ingest as the median of three rounds, the two alternating, and KB per
idle connection at 1,000 and 5,000, with the ratios and the goals):
``python tests/bench/mqtt_broker.py --kinds ours,mosquitto --rounds 3 --messages 40000``.
``--before DIR --kinds before,ours,...`` adds the embedded broker of another checkout (e.g.
``git archive <rev> | tar -x -C DIR``) to every round, for a before/after from one run; kind
``before-external`` is that checkout's external mode.

1. Ingest: QoS 1 messages/s to ``devices/{id}/metrics`` from Debian's ``mosquitto_pub -l`` (one
   process per publisher, one message per stdin line). Ours is the real gateway (``serve``, lab mode),
   so every message is validated, journaled durably in the outbox before its PUBACK, and aggregated;
   "ours-aggregate-only" is the same with ``uplink.forward_samples = false`` (validated and aggregated).
   Bare amqtt is amqtt 0.12 with its default configuration; mosquitto is Debian's. "python-floor"
   (``mqtt_floor.py``) is the least a CPython broker can do and still commit each message before
   its PUBACK: framing, ``json.loads`` and one SQLite row per message, PUBACKs per commit.
   For our kinds it also prints the gateway process's CPU per message (in external mode the
   site broker's own work is not in it: that is the figure for the gateway alone).
2. Memory per idle connection at each ``--conns`` level: RSS of the broker process after that many
   clients have connected (raw CONNECT packets from one asyncio process), minus its RSS before.
   "ours-external" is the gateway with ``mqtt.mode = "external"`` on a Debian mosquitto (persistence
   on, a persistent session): the devices publish to mosquitto, and the rate is counted until the
   last message is durable in the gateway's outbox (not at mosquitto's PUBACK); its connection
   figures are mosquitto's, which holds the devices there. "mosquitto-sub" is the same mosquitto with
   Debian's ``mosquitto_sub`` in the gateway's place (QoS 1, a persistent session, each message
   written to a file and nothing else): what a C client that keeps nothing takes through the same
   broker on the same cores, the reference for ours-external beside the embedded broker. It
   acknowledges each message on its own, we all of a commit's in one write.
   "ours-external-backlog" and "mosquitto-sub-backlog" take the same messages as a backlog: the
   subscriber (the gateway, or ``mosquitto_sub``) is stopped (SIGSTOP) while the publishers put
   them all into mosquitto, which queues them in its session; the rate is then counted from
   SIGCONT until the last has arrived. That is how fast a gateway back from a restart catches up,
   and what its external path takes when the publishers and mosquitto's intake do not share the
   two cores with it: the figure for the gateway's own side of item 1.
3. Reconnect storm: the last level's clients all drop and reconnect within 10 s; how many were
   accepted, and the broker's RSS afterwards compared with before the storm.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import resource
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.broker.external import KEEPALIVE_S  # noqa: E402  (mosquitto_sub is given the same)
from tests.bench.common import cpu_seconds  # noqa: E402
from tests.peers import free_port, serve_args, stop, wait_port  # noqa: E402

BARE_AMQTT = """
import asyncio, sys
from amqtt.broker import Broker
async def main():
    b = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{sys.argv[1]}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    await b.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""

PAYLOAD = json.dumps(
    {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 100, "num_errors": 1, "avg_latency_ms": 40.0,
     "cpu_percent": 30.0, "ram_percent": 40.0, "class_counts": {"person": 90, "forklift": 10}}
)  # fmt: skip


@contextmanager
def broker(
    kind: str, work: Path, before: Path | None = None
) -> Iterator[tuple[int, psutil.Process, psutil.Process | None]]:
    """(port, the broker's process, the gateway's process for our kinds); ``before``: the
    checkout the "before" kinds run."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind in ("before", "before-external"):
        assert before is not None, "--before DIR"
        env["PYTHONPATH"] = str(before)
        kind = "ours" if kind == "before" else "ours-external"
    cwd: str | None = None
    kind = kind.removesuffix("-backlog")  # the same peers; ingest() times them differently
    if kind == "mosquitto-sub":
        with _mosquitto(work, port) as mproc, _subscriber(work, port) as sub:
            yield port, psutil.Process(mproc.pid), psutil.Process(sub.pid)
        return
    if kind == "ours-external":
        with _mosquitto(work, port) as mproc:
            env.update(
                OTA_GATEWAY_MQTT__MODE="external",
                OTA_GATEWAY_MQTT__EXTERNAL_URL=f"mqtt://127.0.0.1:{port}",
                OTA_GATEWAY_DISCOVERY__ENABLED="false",
                OTA_GATEWAY_LOG_LEVEL="warning",
            )
            data = work / f"data-{port}"
            args = serve_args(data, str(work / "registry"), free_port())
            gw = subprocess.Popen([sys.executable, "-m", "gateway", "serve", *args], env=env, cwd=env["PYTHONPATH"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                _wait_subscribed(port)
                yield port, psutil.Process(mproc.pid), psutil.Process(gw.pid)
            finally:
                stop(gw)
        return
    if kind.startswith("ours"):
        env.update(
            OTA_GATEWAY_MQTT__LAB_MODE="true",
            OTA_GATEWAY_MQTT__MAX_CONNECTIONS="20000",
            OTA_GATEWAY_DISCOVERY__ENABLED="false",
            OTA_GATEWAY_LOG_LEVEL="warning",
            OTA_GATEWAY_UPLINK__FORWARD_SAMPLES="false" if kind == "ours-aggregate-only" else "true",
        )
        args = serve_args(work / f"data-{port}", str(work / "registry"), free_port(), mqtt_port=port)
        cmd = [sys.executable, "-m", "gateway", "serve", *args]
        cwd = env["PYTHONPATH"]
    elif kind == "amqtt":
        cmd = [sys.executable, "-c", BARE_AMQTT, str(port)]
    elif kind == "python-floor":
        cmd = [sys.executable, str(ROOT / "tests" / "bench" / "mqtt_floor.py"), str(port), str(work)]
    else:
        conf = work / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100\n"
        )
        cmd = ["mosquitto", "-c", str(conf)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_raise_nofile
    )
    try:
        wait_port(port, 30)
        ours = psutil.Process(proc.pid)
        yield port, ours, ours if kind.startswith("ours") else None
    finally:
        stop(proc)


@contextmanager
def _mosquitto(work: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    conf = work / f"mosquitto-ext-{port}.conf"
    (work / f"db-{port}").mkdir()
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {work}/db-{port}/\nmax_queued_messages 1000000\nmax_inflight_messages 1000\nuser {getpass.getuser()}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_raise_nofile)  # fmt: skip
    try:
        wait_port(port, 30)
        yield proc
    finally:
        stop(proc)


@contextmanager
def _subscriber(work: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``mosquitto_sub`` as the gateway subscribes: QoS 1, MQTT 5, clean start off, a session that
    outlives a disconnect, the gateway's keep-alive; each message one line of ``sub-{port}.txt``
    (flushed per message)."""
    with (work / f"sub-{port}.txt").open("wb") as out:
        proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "5", "-q", "1", "-c",
                                 "-x", "3600", "-k", str(KEEPALIVE_S), "-i", f"sub-{port}", "-t", "devices/+/metrics"],
                                stdout=out, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_subscribed(port)
        yield proc
    finally:
        stop(proc)


def arrivals(kind: str, work: Path, port: int) -> Callable[[], int] | None:
    """For the kinds that count a message where it ends up, not at the PUBACK the publisher gets:
    a count of the messages that arrived there since this call (ours-external: durable in the
    gateway's outbox; mosquitto-sub: written by the subscriber). None for the others."""
    kind = kind.removesuffix("-backlog")
    if kind.endswith("-external"):
        last = outbox_samples(work, port)[1]
        total = 0

        def durable() -> int:
            nonlocal last, total
            n, last = outbox_samples(work, port, last)
            total += n
            return total

        return durable
    if kind == "mosquitto-sub":
        lines = work / f"sub-{port}.txt"
        line = len(PAYLOAD) + 1
        start = lines.stat().st_size // line  # the probe's, from _wait_subscribed
        return lambda: lines.stat().st_size // line - start
    return None


def _wait_subscribed(port: int, timeout_s: float = 30) -> None:
    """Until an MQTT 5 probe's PUBACK says a subscriber exists (reason 0, not 0x10)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["mosquitto_pub", "-V", "5", "-p", str(port), "-q", "1", "-d", "-t",
                              "devices/probe/metrics", "-m", PAYLOAD], capture_output=True, text=True).stdout  # fmt: skip
        if "PUBACK (Mid: 1, RC:0)" in out:
            return
        time.sleep(0.2)
    raise TimeoutError("the gateway did not subscribe at the site broker")


def outbox_samples(work: Path, port: int, after: int = 0) -> tuple[int, int]:
    """(sample records numbered past ``after``, the highest number among them): counted from the
    (kind, seq) index past ``after`` only, so polling it while the gateway drains costs the new
    records, not the whole outbox (a full count every 50 ms took a fifth of a core beside it)."""
    path = work / f"data-{port}" / "outbox.sqlite"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            n, top = db.execute(
                "SELECT COUNT(*), MAX(seq) FROM records WHERE kind = 'sample' AND seq > ?", (after,)
            ).fetchone()
            return int(n), int(top or after)
        finally:
            db.close()
    except sqlite3.Error:
        return 0, after


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


MAX_PER_PUBLISHER = 65_536  # measured: 65,536 each fine, 70,000 each ended early (exit 0)


def publisher(port: int, k: int) -> list[str]:
    return ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l", "-i", f"dev-{k}",
            "-u", f"dev-{k}", "-t", f"devices/dev-{k}/metrics", "-M", "100"]  # fmt: skip


def ingest(
    port: int,
    messages: int,
    publishers: int,
    work: Path,
    arrived: Callable[[], int] | None = None,
    backlog: psutil.Process | None = None,
) -> float:
    """Messages/s from the first publisher's start until the last PUBACK, or with ``arrived``
    (:func:`arrivals`) until every message has arrived where it counts. With ``backlog`` (the
    subscriber), that process is stopped until the publishers are done and the clock starts when
    it goes on."""
    per = messages // publishers
    lines = work / "lines.txt"
    lines.write_text((PAYLOAD + "\n") * per)
    t0 = time.perf_counter()
    with _stopped(backlog):
        procs = []
        for k in range(publishers):
            with lines.open("rb") as stdin:
                procs.append(
                    subprocess.Popen(
                        publisher(port, k), stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
        codes = [p.wait(600) for p in procs]
        if backlog is not None:
            if time.perf_counter() - t0 > KEEPALIVE_S:
                print(
                    f"    the subscriber was stopped past its {KEEPALIVE_S} s keep-alive: the drain may include a reconnect"
                )
            t0 = time.perf_counter()  # the clock starts as the subscriber goes on
    if arrived is not None:  # not at mosquitto's PUBACK: where the message ends up
        deadline = time.monotonic() + 600
        while (got := arrived()) < per * publishers and time.monotonic() < deadline:
            time.sleep(0.05)
        if got < per * publishers:
            print(f"    only {got} of {per * publishers} messages arrived within 600 s: the rate is a bound")
    took = time.perf_counter() - t0
    if any(codes):
        print(f"    publisher exit codes: {codes}")
    return per * publishers / took


@contextmanager
def _stopped(proc: psutil.Process | None) -> Iterator[None]:
    """``proc`` (if any) stopped with SIGSTOP for the block, and going on again (SIGCONT) however the
    block ends, so a publisher that fails never leaves a subscriber stopped for ``stop()`` to find."""
    if proc is not None:
        proc.suspend()
    try:
        yield
    finally:
        if proc is not None:
            proc.resume()


def _connect_packet(client_id: str) -> bytes:
    def s(text: str) -> bytes:
        return struct.pack("!H", len(text)) + text.encode()

    body = s("MQTT") + bytes([4, 0x82]) + struct.pack("!H", 600) + s(client_id) + s(client_id)
    return bytes([0x10, len(body)]) + body


async def open_clients(port: int, n: int, prefix: str) -> list[asyncio.StreamWriter]:
    sem = asyncio.Semaphore(200)
    writers: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_connect_packet(f"{prefix}{i}"))
            ack = await asyncio.wait_for(reader.readexactly(4), 30)
            if ack[3] == 0:
                writers.append(writer)
            else:
                writer.close()

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"    {len(failures)} connections failed: {failures[0]!r}")
    return writers


async def memory(port: int, proc: psutil.Process, levels: list[int]) -> tuple[dict[int, float], str]:
    await asyncio.sleep(1)
    base = proc.memory_info().rss
    per: dict[int, float] = {}
    writers: list[asyncio.StreamWriter] = []
    for level in levels:
        writers += await open_clients(port, level - len(writers), f"idle{len(writers)}-")
        print(f"    {len(writers)} of {level} connections open at once")
        await asyncio.sleep(2)
        per[level] = (proc.memory_info().rss - base) / max(1, len(writers))
    before_storm = proc.memory_info().rss
    for w in writers:
        w.close()
    await asyncio.sleep(1)
    t0 = time.perf_counter()
    again = await open_clients(port, levels[-1], "storm-")
    took = time.perf_counter() - t0
    await asyncio.sleep(2)
    after = proc.memory_info().rss
    for w in again:
        w.close()
    await asyncio.sleep(2)
    idle_after = proc.memory_info().rss
    storm = (
        f"reconnect storm: {len(again)}/{levels[-1]} accepted in {took:.1f} s; RSS before storm "
        f"{before_storm / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB, all closed again {idle_after / 2**20:.0f} MiB "
        f"(baseline {base / 2**20:.0f} MiB)"
    )
    return per, storm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--conns", default="1000,5000")
    ap.add_argument("--kinds", default="ours,ours-aggregate-only,ours-external,mosquitto-sub,amqtt,mosquitto")
    ap.add_argument("--rounds", type=int, default=1, help="ingest rounds, the kinds alternating; medians")
    ap.add_argument(
        "--before", type=Path, default=None, help="another checkout: kind 'before' runs its gateway"
    )
    args = ap.parse_args()
    if args.messages // args.publishers > MAX_PER_PUBLISHER:
        ap.error(
            f"--messages {args.messages} over {args.publishers} publishers is more than {MAX_PER_PUBLISHER} "
            "each: Debian's mosquitto_pub -l ends early past that without an error (70,000 each sent a "
            "fraction, and every broker looked ten times faster); use more --publishers"
        )
    levels = [int(x) for x in args.conns.split(",")]
    _raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
    (work / "registry").mkdir()
    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # the gateway's CPU-us per message
    mem: dict[str, dict[int, float]] = {}
    kinds = [
        k
        for k in (
            "ours",
            "before",
            "ours-aggregate-only",
            "ours-external",
            "before-external",
            "mosquitto-sub",
            "ours-external-backlog",
            "mosquitto-sub-backlog",
            "python-floor",
            "amqtt",
            "mosquitto",
        )
        if k in args.kinds.split(",")
    ]
    for _ in range(args.rounds):
        for kind in kinds:
            with broker(kind, work, args.before) as (port, proc, gateway):
                spent = cpu_seconds([gateway]) if gateway else 0.0
                stopped = gateway if kind.endswith("-backlog") else None
                rate = ingest(port, args.messages, args.publishers, work, arrivals(kind, work, port), stopped)
                runs.setdefault(kind, []).append(rate)
                per = ""
                if gateway:
                    cpu.setdefault(kind, []).append((cpu_seconds([gateway]) - spent) / args.messages * 1e6)
                    who = "subscriber" if kind.startswith("mosquitto-sub") else "gateway"
                    per = f"; {who} {cpu[kind][-1]:.1f} CPU-us per message"
                print(
                    f"{kind}: ingest {rate:.0f} msg/s QoS 1 ({args.messages} messages, {args.publishers} publishers); broker CPU {cpu_seconds([proc]):.1f} s so far{per}"
                )
    for kind in kinds:
        if (
            kind in ("ours-aggregate-only", "python-floor", "before-external")
            or "-sub" in kind
            or "-backlog" in kind
        ):
            continue  # the same broker as a kind measured here, or as ours-external (mosquitto)
        with broker(kind, work, args.before) as (port, proc, _gateway):
            mem[kind], storm = asyncio.run(memory(port, proc, levels))
            print(
                f"{kind}: "
                + ", ".join(
                    f"{lvl} idle connections: {kb / 1024:.1f} KB each" for lvl, kb in mem[kind].items()
                )
            )
            print(f"{kind}: {storm}")
    rates = {k: statistics.median(v) for k, v in runs.items()}
    print()
    print(f"ingest msg/s (median of {args.rounds}): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    if cpu:
        print(
            "gateway (mosquitto-sub: subscriber) CPU-us per message (median): "
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in cpu.items())
        )
    base = rates.get("ours")
    if base:
        print("ratios to ours (embedded): " + ", ".join(f"{k} {v / base:.2f}" for k, v in rates.items()))
    for lvl in levels:
        if measured := [f"{k} {m[lvl] / 1024:.1f} KB" for k, m in mem.items() if lvl in m]:
            print(f"memory per connection at {lvl}: " + ", ".join(measured))
    if "ours" in rates and "mosquitto" in rates:
        print(versus_mosquitto(runs, mem, levels))
    if "ours-external" in rates and "mosquitto-sub" in rates:
        print(versus_subscriber(runs))
    if "ours-external-backlog" in rates:
        print(backlog_versus(runs))


def paired(runs: dict[str, list[float]], a: str, b: str) -> tuple[float, float, str]:
    """(median of kind ``a``, median of ``b``, each round's ratio a/b): the rounds alternate the kinds."""
    each = ", ".join(f"{x / y:.2f}x" for x, y in zip(runs[a], runs[b], strict=True))
    return statistics.median(runs[a]), statistics.median(runs[b]), each


def versus_mosquitto(
    runs: dict[str, list[float]], mem: dict[str, dict[int, float]], levels: list[int]
) -> str:
    """The embedded broker against mosquitto from this same run, with issue 27's goals."""
    ours, theirs, each = paired(runs, "ours", "mosquitto")
    lines = [
        "",
        "ours (embedded) vs mosquitto, same run:",
        f"  QoS 1 ingest: ours {ours:.0f} msg/s, mosquitto {theirs:.0f} msg/s: {ours / theirs:.2f}x"
        f" (each round: {each}; goal at least 0.5x)",
    ]
    if "python-floor" in runs:
        floor = statistics.median(runs["python-floor"])
        lines.append(
            f"  the CPython floor (mqtt_floor.py: framing, json.loads, one durable row): {floor:.0f} msg/s,"
            f" {floor / theirs:.2f}x mosquitto; ours is {ours / floor:.2f}x the floor"
        )
    for lvl in levels:
        a, b = mem.get("ours", {}).get(lvl), mem.get("mosquitto", {}).get(lvl)
        if a is not None and b is not None:
            lines.append(
                f"  per idle connection at {lvl}: ours {a / 1024:.1f} KB, mosquitto {b / 1024:.1f} KB:"
                f" {a / max(b, 1):.1f}x (goal at most 4 KB at 5000)"
            )
    return "\n".join(lines)


def versus_subscriber(runs: dict[str, list[float]]) -> str:
    """External mode beside a C subscriber that keeps nothing, through the same broker on the same
    cores, and beside the embedded broker (issue 27's goal); each round's ratio from its own runs."""
    ext, sub, each = paired(runs, "ours-external", "mosquitto-sub")
    lines = [
        "",
        "ours-external vs mosquitto-sub (a C subscriber that keeps nothing), same run:",
        f"  ours-external {ext:.0f} msg/s durable, mosquitto-sub {sub:.0f} msg/s: {ext / sub:.2f}x (each round: {each})",
    ]
    if "ours" in runs:
        emb = statistics.median(runs["ours"])
        lines.append(
            f"  the embedded broker {emb:.0f} msg/s durable: ours-external {ext / emb:.2f}x of it (goal at"
            f" least 1.0x), mosquitto-sub {sub / emb:.2f}x"
        )
    return "\n".join(lines)


def backlog_versus(runs: dict[str, list[float]]) -> str:
    """The gateway's external path draining a backlog (the publishers done, mosquitto only sending)
    beside the embedded broker's live ingest and the C subscriber's drain, each round's ratio from
    its own runs."""
    lines = ["", "ours-external-backlog (the gateway's side alone: a queued backlog drained), same run:"]
    for peer in ("ours", "mosquitto-sub-backlog"):
        if peer in runs:
            ext, other, each = paired(runs, "ours-external-backlog", peer)
            lines.append(
                f"  {ext:.0f} msg/s durable beside {peer} {other:.0f} msg/s: {ext / other:.2f}x (each round: {each})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
