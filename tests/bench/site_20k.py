"""Benchmark: a 20,000-device site on one box, the gateway in external mode against mosquitto.

Run (the full run, about 10 minutes of wall time, then up to 3 minutes of draining and counting):

    .venv/bin/python tests/bench/site_20k.py --devices 20000 --minutes 10

and a quick smoke run: ``--devices 500 --minutes 2``. Everything is on loopback and in a temp folder:

- Debian's mosquitto, persistence on, on an ephemeral port (the site broker). One mosquitto holds a
  descriptor per device: where ``--devices`` is past what the hard RLIMIT_NOFILE allows one process
  (20,000 on the development box, whose hard limit cannot be raised there), the devices are split
  over more brokers, each bridged to the gateway's one at QoS 1 with a persistent session (the
  README's advice for sites past one broker); ``--brokers N`` forces N;
- a registry folder with the cloud's key: the baseline ``detector`` 1.0.0 before the start, and
  2.0.0 published at 15 % of the run, which the gateway holds to its waves (short soak settings in the
  gateway's config, :class:`tests.bench.site_watch.Gateway`, so that it can finish within the run);
- ``ota-gateway serve`` as a real process, ``mqtt.mode = "external"`` on that mosquitto, its data
  folder in the temp folder;
- ``--devices`` simulated devices in ``--procs`` load processes (:mod:`tests.bench.site_devices`:
  metrics once a minute at QoS 1 with the device's clock in ``timestamp``, polls every 5 minutes);
- at 45 % of the run the gateway is killed with SIGKILL and started again; at 70 % the gateway's
  mosquitto is stopped with SIGTERM (it writes its persistence file) and started again on the same port.

It prints the gateway's CPU (mean over the run and the worst 5 s) and RSS (max), mosquitto's beside
it, the devices' poll latency (p50/p99/max), the end-to-end time of a metrics message from the
device's publish to the gateway's outbox (the record's ``at``, the gateway's receive time, and when
a reader polling ``outbox.sqlite`` every 0.1 s first saw it committed), and the count of
acknowledged messages lost: every message a device got a PUBACK for from mosquitto must be in the
outbox at least once (a message whose PUBACK to mosquitto was lost to the kill comes again: the
duplicates are counted too; the cloud deduplicates). No figure is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work  # noqa: E402
from tests.bench.mqtt_broker import _wait_subscribed  # noqa: E402
from tests.bench.site_devices import Plan, Report, load_process, raise_nofile  # noqa: E402
from tests.bench.site_watch import Gateway, Mosquitto, Watch, pct  # noqa: E402
from tests.peers import free_port  # noqa: E402

HEALTH = {"max_cpu_percent": 90.0, "max_ram_percent": 90.0, "max_latency_ms": 500.0, "max_error_rate": 0.05,
          "warmup_inferences": 100}  # fmt: skip
SITE = "site20k"
BROKER_FDS = 64


def publish(work: Path, keys: Path, version: str, size: int) -> None:
    model = work / f"detector-{version}.bin"
    model.write_bytes(os.urandom(size))
    registry.publish(work / "registry", model, keys / "private.pem", model_id="detector", version=version,
                     site=SITE, health=HEALTH)  # fmt: skip


def plans(args: argparse.Namespace, ports: list[int], http_url: str, start_at: float) -> list[Plan]:
    """Load process k drives its share of the devices on broker k mod the number of brokers."""
    per, extra = divmod(args.devices, args.procs)
    out, first = [], 0
    for k in range(args.procs):
        count = per + (k < extra)
        out.append(Plan(first, count, ports[k % len(ports)], http_url, f"127.0.1.{k + 1}", start_at,
                        start_at + args.minutes * 60, 90.0, k, "1.0.0"))  # fmt: skip
        first += count
    return out


def brokers_needed(args: argparse.Namespace, hard: int) -> int:
    """One mosquitto holds a descriptor per device and about BROKER_FDS of its own: past the hard
    limit the devices go to more brokers, bridged to the gateway's (``--brokers`` says how many)."""
    return args.brokers or max(1, -(-args.devices // (hard - BROKER_FDS)))


def start_brokers(root: Path, n: int) -> list[Mosquitto]:
    first = Mosquitto(root / "mosquitto-1", free_port())
    brokers = [first] + [Mosquitto(root / f"mosquitto-{i + 1}", free_port(), first.port) for i in range(1, n)]
    for b in brokers:
        b.start()
    return brokers


def run(args: argparse.Namespace) -> None:
    limits = raise_nofile()
    work = bench_work("site20k-")
    print(f"work folder {work.root}; RLIMIT_NOFILE here {limits[0]} (hard {limits[1]}): "
          f"the load processes, mosquitto and the gateway are each raised to the hard limit")  # fmt: skip
    publish(work.root, work.keys, "1.0.0", args.artifact_kb << 10)
    brokers = start_brokers(work.root, brokers_needed(args, limits[1]))
    args.procs = max(args.procs, len(brokers))
    if len(brokers) > 1 and not args.brokers:
        print(f"{args.devices} devices need more descriptors than one mosquitto gets here (hard limit {limits[1]}): "
              f"{len(brokers)} brokers, each past the first bridged to it (QoS 1, persistent session)")  # fmt: skip
    mosq = brokers[0]
    gw = Gateway(work.root, work.public_key, mosq.port, args)
    gw.start()
    for b in brokers:  # the gateway subscribed, and each bridge up
        _wait_subscribed(b.port, 60)
    watch = Watch(gw, brokers)
    watch.start()
    run_s = args.minutes * 60
    start_at = time.time() + max(10.0, args.devices / 1000)  # the devices connect first
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[Report] = ctx.Queue()
    procs = [
        ctx.Process(target=load_process, args=(p, out))
        for p in plans(args, [b.port for b in brokers], gw.url, start_at)
    ]
    for p in procs:
        p.start()
    events: list[tuple[float, str]] = []
    try:
        schedule(start_at, run_s, work.root, work.keys, args, gw, mosq, watch, events)
        reports = [out.get(timeout=run_s + 600) for _ in procs]
        for p in procs:
            p.join(30)
        acked = {(d, s): t for r in reports for d, s, t in r.acked}
        watch.wait_for(set(acked), timeout_s=180)
        summary(args, start_at, run_s, reports, acked, watch, events, limits)
    finally:
        watch.stop()
        for p in procs:
            if p.is_alive():
                p.kill()
        gw.stop()
        for b in brokers:
            b.stop()
        if not args.keep:
            shutil.rmtree(work.root, ignore_errors=True)


def schedule(
    start_at: float,
    run_s: float,
    work: Path,
    keys: Path,
    args: argparse.Namespace,
    gw: Gateway,
    mosq: Mosquitto,
    watch: Watch,
    events: list[tuple[float, str]],
) -> None:
    def at(share: float) -> None:
        time.sleep(max(0.0, start_at + share * run_s - time.time()))

    def note(what: str) -> None:
        events.append((time.time() - start_at, what))
        print(f"  t={events[-1][0]:6.1f} s  {what}", flush=True)

    at(0.0)
    watch.mark()
    note(f"{args.devices} devices start publishing and polling")
    at(0.15)
    publish(work, keys, "2.0.0", args.artifact_kb << 10)
    note("detector 2.0.0 published in the registry")
    at(0.45)
    gw.kill9()
    note("gateway killed (SIGKILL)")
    time.sleep(2.0)
    gw.start()
    note("gateway started again and listening")
    at(0.70)
    mosq.stop()
    note("the gateway's mosquitto stopped (SIGTERM: persistence written)")
    time.sleep(2.0)
    mosq.start()
    note("mosquitto started again on the same port")
    at(1.0)
    watch.mark()
    note("devices stop; draining the last PUBACKs")


def summary(
    args: argparse.Namespace,
    start_at: float,
    run_s: float,
    reports: list[Report],
    acked: dict[tuple[str, float], float],
    watch: Watch,
    events: list[tuple[float, str]],
    limits: tuple[int, int],
) -> None:
    polls = sorted(x for r in reports for x in r.poll_ms)
    answers: Counter[str] = sum((r.answers for r in reports), Counter())
    versions: Counter[str] = sum((r.versions for r in reports), Counter())
    seen = watch.seen
    lost = [k for k in acked if k not in seen]
    twice = sum(1 for k in acked if seen.get(k, (0,))[0] > 1)
    to_at = sorted((seen[k][2] - k[1]) * 1000 for k in acked if k in seen)
    to_seen = sorted((seen[k][1] - k[1]) * 1000 for k in acked if k in seen)
    cpu = watch.cpu["gateway"]
    brokers = [n for n in watch.cpu if n != "gateway"]
    print()
    print(f"site: {args.devices} devices in {args.procs} load processes, {args.minutes:g} min, "
          f"RLIMIT_NOFILE {limits[0]}/{limits[1]}; {len(brokers)} mosquitto holding at most {watch.max_connections} connections")  # fmt: skip
    print(f"gateway:   CPU {cpu.mean():.1f} % of one core over the run (worst 5 s: {cpu.worst:.0f} %), "
          f"RSS max {watch.rss_max['gateway'] / 2**20:.0f} MiB")  # fmt: skip
    for name in brokers:
        m = watch.cpu[name]
        print(f"{name}: CPU {m.mean():.1f} % (worst 5 s: {m.worst:.0f} %), RSS max "
              f"{watch.rss_max[name] / 2**20:.0f} MiB")  # fmt: skip
    print(f"polls: {len(polls)} answered, p50 {pct(polls, 50):.1f} ms, p99 {pct(polls, 99):.1f} ms, "
          f"max {pct(polls, 100):.0f} ms; answers {dict(answers.most_common())}")  # fmt: skip
    print(f"metrics: {len(acked)} acknowledged by mosquitto, {sum(r.unacked for r in reports)} never acknowledged "
          f"(sent again until the end), {len(lost)} acknowledged and LOST, {twice} in the outbox twice or more "
          f"(at least once)")  # fmt: skip
    print(f"device publish -> gateway receive (record's at): p50 {pct(to_at, 50):.0f} ms, p99 {pct(to_at, 99):.0f} ms, "
          f"max {pct(to_at, 100):.0f} ms")  # fmt: skip
    print(f"device publish -> seen committed in outbox.sqlite (0.1 s reader): p50 {pct(to_seen, 50):.0f} ms, "
          f"p99 {pct(to_seen, 99):.0f} ms, max {pct(to_seen, 100):.0f} ms")  # fmt: skip
    # To tell the faults' tail from the rest: a message published while the gateway is down waits
    # in mosquitto for its return, and 7 s of a 10-minute run is 1.2 % of its messages, past the p99.
    killed = next((t for t, what in events if "killed" in what), run_s)
    calm = sorted((seen[k][1] - k[1]) * 1000 for k in acked if k in seen and k[1] - start_at < killed)
    print(f"  of those published before the kill (t < {killed:.0f} s, {len(calm)} messages): p50 "
          f"{pct(calm, 50):.0f} ms, p99 {pct(calm, 99):.0f} ms, max {pct(calm, 100):.0f} ms")  # fmt: skip
    print(f"rollout: {watch.gate_line()}; devices on each version at the end {dict(versions)}; "
          f"{sum(r.switches for r in reports)} switches")  # fmt: skip
    for t, what in watch.gate_timeline:
        print(f"  t={t - start_at:6.1f} s  gate {what}")
    print(f"device MQTT connects {sum(r.connects for r in reports)} (reconnects included), refused or failed "
          f"{sum(r.connect_failures for r in reports)}, devices never connected {sum(r.never_connected for r in reports)}")  # fmt: skip
    print(f"gateway's link to mosquitto (its last /status, counted since its last start): {watch.mqtt}")
    if lost:
        print(f"first lost: {lost[:5]}")
    if polls:
        print(f"poll latency mean {statistics.fmean(polls):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=4, help="load processes (each its own event loop)")
    ap.add_argument("--artifact-kb", type=int, default=64, help="size of the model files")
    ap.add_argument("--brokers", type=int, default=0,
                    help="mosquitto brokers (0: as many as the descriptor limit needs); the first is the gateway's")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, outbox)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    run(args)


if __name__ == "__main__":
    main()
