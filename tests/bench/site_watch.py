"""The peers and the watcher of ``tests/bench/site_20k.py``: mosquitto and the gateway as processes
that can be stopped and started again on the same ports, and a thread that samples their CPU and
RSS, reads the gateway's outbox beside it and follows the rollout on the operator API.

The outbox is read the way an outside reader can: ``outbox.sqlite`` opened read-only beside the
running gateway (SQLite in WAL mode lets a reader see each commit), every 0.1 s, each ``sample``
record keyed by its device and the device's own ``timestamp``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.bench.site_devices import raise_nofile
from tests.peers import ROOT, free_port, stop, wait_port

Key = tuple[str, float]  # (device id, the device's timestamp)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile of sorted ``values`` (nearest rank); 0 for none."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]


class Mosquitto:
    """Debian's mosquitto, persistence on, anonymous (the bench's devices are not the point here).
    With ``bridge_to``, a second broker of a small cluster: it holds its own devices and passes
    their metrics and events on to the gateway's broker over a QoS 1 bridge with a persistent
    session (and the gateway's notices back), as a site past one broker's descriptors would."""

    def __init__(self, work: Path, port: int, bridge_to: int | None = None) -> None:
        self.work, self.port = work, port
        self.proc: subprocess.Popen[bytes] | None = None
        (work / "db").mkdir(parents=True)
        conf = (
            f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {work / 'db'}/\n"
            "max_queued_messages 1000000\nmax_queued_bytes 0\nmax_connections -1\n"
            f"connection_messages false\nlog_dest file {work / 'mosquitto.log'}\nlog_type error\nlog_type warning\n"
        )
        if bridge_to is not None:
            conf += (
                f"connection to-gateway-broker\naddress 127.0.0.1:{bridge_to}\nclientid bridge-{port}\n"
                "cleansession false\nbridge_protocol_version mqttv311\nrestart_timeout 1 5\n"
                "topic devices/+/metrics out 1\ntopic devices/+/events out 1\ntopic devices/+/samples out 1\n"
                "topic devices/+/updates in 1\n"
            )
        (work / "mosquitto.conf").write_text(conf)

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.work / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)  # fmt: skip
        wait_port(self.port, 30)

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file on the way out."""
        if self.proc is not None:
            stop(self.proc, 60)


class Gateway:
    """``ota-gateway serve`` with the bench's config file; SIGKILL and start again on the same ports."""

    def __init__(self, work: Path, public_key: Path, mqtt_port: int, args: argparse.Namespace) -> None:
        self.work = work
        self.data = work / "data"
        self.http_port, self.operator_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = work / "gateway.toml"
        self.config.write_text(f"""\
site = "site20k"
data_dir = "{self.data}"
log_level = "warning"
[http]
listen = "127.0.0.1:{self.http_port}"
max_connections = 10000
[operator]
listen = "127.0.0.1:{self.operator_port}"
[trust]
trusted_keys = ["{public_key}"]
[mirror]
upstream = "{work / "registry"}"
poll_interval_s = 5.0
[devices]
poll_interval_s = 300.0
poll_jitter = 0.25
max_devices = {max(100_000, 2 * args.devices)}
[mqtt]
mode = "external"
external_url = "mqtt://127.0.0.1:{mqtt_port}"
[telemetry]
window_s = 20.0
[uplink]
outbox_max_bytes = {1 << 30}
[gates]
first_version = "open"
waves = [1.0, 10.0, 50.0, 100.0]
soak_min_s = 20.0
min_samples = 3
warmup_share = 0.1
reference_wait_s = 120.0
[discovery]
enabled = false
""")

    def start(self) -> None:
        log = (self.work / "gateway.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                                     env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stdout=log, stderr=log,
                                     preexec_fn=raise_nofile)  # fmt: skip
        log.close()
        wait_port(self.http_port, 120)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, 30)

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.operator_port}/status"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc: dict[str, Any] = json.loads(r.read())
        return doc


@dataclass
class Cpu:
    """CPU-seconds of a process across its restarts, and the worst 5 s."""

    total_by_pid: dict[int, float] = field(default_factory=dict)
    worst: float = 0.0
    last: tuple[float, float] | None = None  # (wall, total) at the last 5 s mark

    @property
    def total(self) -> float:
        return sum(self.total_by_pid.values())

    def sample(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        try:
            t = psutil.Process(proc.pid).cpu_times()
        except psutil.Error:
            return
        self.total_by_pid[proc.pid] = t.user + t.system
        now = time.monotonic()
        if self.last is None:
            self.last = (now, self.total)
        elif now - self.last[0] >= 5:
            self.worst = max(self.worst, (self.total - self.last[1]) / (now - self.last[0]) * 100)
            self.last = (now, self.total)

    marks: list[tuple[float, float]] = field(default_factory=list)  # (wall, total) at start and end

    def mark(self) -> None:
        self.marks.append((time.monotonic(), self.total))

    def mean(self) -> float:
        """Percent of one core between the first and last marks (the devices' run)."""
        (t0, c0), (t1, c1) = self.marks[0], self.marks[-1]
        return (c1 - c0) / max(1e-9, t1 - t0) * 100


class Watch:
    def __init__(self, gw: Gateway, brokers: list[Mosquitto]) -> None:
        self.gw, self.brokers = gw, brokers
        self.procs: dict[str, Gateway | Mosquitto] = {"gateway": gw}
        self.procs.update({f"mosquitto-{i + 1}": b for i, b in enumerate(brokers)})
        self.cpu = {name: Cpu() for name in self.procs}
        self.rss_max = dict.fromkeys(self.procs, 0)
        self.seen: dict[Key, tuple[int, float, float]] = {}  # key -> (times, first seen, record's at)
        self.gate_timeline: list[tuple[float, str]] = []
        self.last_gate = self.last_step = ""
        self.mqtt: dict[str, int] = {}  # the gateway's link to the site broker, last seen (/status)
        self.max_connections = 0  # the brokers' TCP connections, sampled every 15 s
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._tail, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]  # fmt: skip
        self._seq = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _sample(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            for name, holder in self.procs.items():
                proc = holder.proc
                self.cpu[name].sample(proc)
                try:
                    if proc is not None and proc.poll() is None:
                        rss = psutil.Process(proc.pid).memory_info().rss
                        self.rss_max[name] = max(self.rss_max[name], rss)
                except psutil.Error:
                    pass
            tick += 1
            if tick % 5 == 0:
                self._follow_gate()
            if tick % 15 == 0:
                self.max_connections = max(self.max_connections, self.connections())

    def _follow_gate(self) -> None:
        try:
            doc = self.gw.status()
        except (OSError, ValueError):
            return
        gates = doc.get("gates", [])
        self.mqtt = {**self.mqtt, **{k: v for k, v in doc.get("mqtt", {}).items() if isinstance(v, int)}}
        line = "; ".join(f"{g['deployment']}: {g['stage']} wave {g['wave']}, {g['admitted']} admitted, "
                         f"{g['ran']} ran" for g in gates)  # fmt: skip
        step = "; ".join(f"{g['deployment']}: {g['stage']} wave {g['wave']}" for g in gates)
        if step and step != self.last_step:  # a new stage or wave: the timeline (with who ran then)
            self.last_step = step
            self.gate_timeline.append((time.time(), line))
        self.last_gate = line or self.last_gate

    def mark(self) -> None:
        for name, holder in self.procs.items():
            self.cpu[name].sample(holder.proc)
            self.cpu[name].mark()

    def gate_line(self) -> str:
        return self.last_gate or "no gate seen"

    def _tail(self) -> None:
        path = self.gw.data / "outbox.sqlite"
        db: sqlite3.Connection | None = None
        while not self._stop.wait(0.1):
            try:
                if db is None:
                    if not path.exists():
                        continue
                    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                rows = db.execute("SELECT seq, at, body FROM records WHERE seq > ? AND kind = 'sample' ORDER BY seq",
                                  (self._seq,)).fetchall()  # fmt: skip
            except sqlite3.Error:
                if db is not None:
                    db.close()
                db = None
                continue
            now = time.time()
            for seq, at, body in rows:
                self._seq = seq
                doc = json.loads(body)
                stamp = doc.get("timestamp")
                if not isinstance(stamp, float | int):
                    continue
                key = (doc["device_id"], float(stamp))
                old = self.seen.get(key)
                self.seen[key] = (1, now, at) if old is None else (old[0] + 1, old[1], old[2])

    def wait_for(self, keys: set[Key], timeout_s: float) -> None:
        """Until every key is in the outbox, or ``timeout_s`` (a condition polled with a deadline)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not keys <= self.seen.keys():
            time.sleep(0.5)

    def connections(self) -> int:
        n = 0
        for b in self.brokers:
            try:
                n += len(psutil.Process(b.proc.pid).net_connections(kind="tcp")) if b.proc else 0
            except psutil.Error:
                pass
        return n
