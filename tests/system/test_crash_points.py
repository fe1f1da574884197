"""Crash points: the real ``ota-gateway serve`` killed (-9) at random instants while it mirrors large
artifacts from a throttled upstream, accepts new signed indexes, steps its gates and ingests
metrics over HTTP and MQTT, and started again each time on the same ports and data folder.

The world around it, all running the whole time and never waiting for the gateway's state:
- nginx (Debian) serves the registry folder with ``limit_rate``, so each new version's artifact
  takes seconds to arrive and a kill lands mid-mirror as often as not;
- new versions are published (signed index and artifact) at random instants;
- ``DEVICES`` devices poll (half of them long polls), take what they are offered, post events and
  metrics over HTTP; a few MQTT clients publish metrics at QoS 1 over a raw socket (so "acknowledged"
  is exactly "a PUBACK came back");
- downloaders fetch every published artifact and signature at random ranges, resuming with
  ``If-Range`` after a broken transfer, including while the artifact is still being mirrored;
- an HTTP ingest sink takes the uplink's batches (duplicates allowed by sequence number); it goes
  away and comes back at random instants, and is away at the end, so the outbox holds records.

Kill instants come from a seeded RNG: sometimes during start-up, otherwise a random delay after the
start check. Checked over the whole run:
- it starts every time: the port answers and a poll gets a valid answer within ``START_DEADLINE_S``,
  and it never exits by itself;
- every byte of every 200/206 body equals the same bytes of the real artifact (or ``.sig``);
- no acknowledged metric is lost: after the final (graceful) stop, each one is in ``outbox.sqlite``
  or at the sink, and the sequence numbers there and at the sink together run 1..max without a hole;
- the gate never admits more than planned: the distinct devices ever offered a candidate never
  exceed wave 0's size (the soak is long, so only wave 0 is ever open).

``CRASH_POINTS`` sets the number of kills (default 20, about 40 s here; 100 take about 4 min) and
``CRASH_SEED`` the seed; ``.ci/run`` runs ``CRASH_POINTS=100`` as a further step. Run with ``-s``
for the figures: kills and restarts, bytes verified, metrics acknowledged and lost, answers checked,
devices offered each candidate, upstream transfers a kill cut short.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.settings import GateSettings
from gateway.core.waves import first_wave_most
from tests.conftest import Registry
from tests.peers import IngestServer, free_port, gateway_process, ingest_batch, nginx, serve_args, stop

CRASH_POINTS = int(os.environ.get("CRASH_POINTS", "8"))
SEED = int(os.environ.get("CRASH_SEED", "11"))
DEVICES = 120
GATES = GateSettings()  # the defaults: waves 1/5/10/25/50/100 %, 1 device minimum, soak 900 s
CHECKER = "start-check"  # the device whose poll checks each start: one more device the site knows
# the most wave 0 admits: its count, grown by its devices' errors (these report none) to twice it
FIRST_WAVE = first_wave_most(GATES.waves, DEVICES + 1, GATES.min_devices_per_wave)
BIG_BYTES = 3 << 20  # each new version's artifact; nginx sends it at RATE
RATE = "1m"
START_DEADLINE_S = 30.0
HEALTH = {"max_cpu_percent": 80, "warmup_inferences": 10}
MODEL = "detector"
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass
class Ledger:
    """What the world saw, and every violation of the four promises."""

    kills: int = 0
    startup_kills: int = 0
    starts: int = 0
    starts_checked: int = 0
    answers: int = 0
    bytes_verified: int = 0
    bodies_verified: int = 0
    unavailable: int = 0
    published: list[str] = field(default_factory=list)
    upstream_cut: int = 0  # artifact transfers from the upstream that a kill cut short
    upstream_resumed: int = 0  # ranged artifact requests to the upstream (resumes)
    index_fetches: int = 0
    outbox: str = ""  # what the final outbox and the sink held
    acked: set[tuple[str, int]] = field(default_factory=set)
    acked_mqtt: int = 0
    exposed: dict[str, set[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def offered(self, version: str, device: str) -> None:
        seen = self.exposed.setdefault(version, set())
        seen.add(device)
        if len(seen) > FIRST_WAVE:
            self.violations.append(
                f"{len(seen)} devices offered {MODEL}@{version}; wave 0 admits {FIRST_WAVE}"
            )


class Sink(IngestServer):
    """The cloud's HTTP ingest: keeps each record by sequence number; a duplicate must be identical."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(free_port())
        self.ledger = ledger
        self.by_seq: dict[int, dict[str, Any]] = {}
        self.down = False  # the uplink is out: batches get 503 and stay in the outbox

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        for r in (await ingest_batch(request))["records"]:
            if self.by_seq.setdefault(r["seq"], r) != r:
                self.ledger.violations.append(f"seq {r['seq']} delivered twice with different records")
        return web.Response(status=204)


class Process:
    """One gateway command line, killed and started again on the same ports and data folder."""

    def __init__(self, reg: Registry, upstream: str, data: Path, env: dict[str, str], log: Path) -> None:
        self.http_port, self.mqtt_port = free_port(), free_port()
        self.args = serve_args(data, upstream, self.http_port, site=reg.site, trusted_key=reg.public_key,
                               mqtt_port=self.mqtt_port)  # fmt: skip
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            out.write(b"\n=== start ===\n")
            out.flush()
            self.proc = gateway_process(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=out)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


async def started(gw: Process, http: aiohttp.ClientSession, ledger: Ledger) -> str | None:
    """None once the port answers and a poll gets a valid answer; otherwise what went wrong."""
    deadline = time.monotonic() + START_DEADLINE_S
    url = f"http://127.0.0.1:{gw.http_port}/devices/{CHECKER}/updates"
    last = "the port never answered"
    while time.monotonic() < deadline:
        if gw.exited() is not None:
            return f"exited with {gw.exited()} during start-up ({last})"
        try:
            async with http.get(url, params={"model_id": MODEL, "model_version": "1.0.0"}) as r:
                body = await r.json() if r.status == 200 else None
                if body is not None and body.get("version") != "1.0.0" and not body.get("rollback"):
                    ledger.offered(body["version"], CHECKER)
                if r.status == 204 or (body is not None and body.get("model_id") == MODEL):
                    ledger.answers += 1
                    return None
                last = f"the last poll answered {r.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            last = f"the last poll failed: {exc!r}"
        await asyncio.sleep(0.05)  # polling a condition with a deadline
    return f"no valid poll answer within {START_DEADLINE_S} s ({last})"


class Artifacts:
    """The real bytes of everything published: what every served byte is compared with."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.files: dict[str, bytes] = {}  # URL path -> bytes

    def add(self, version: str, data: bytes) -> None:
        name = f"{MODEL}-{version}.bin"
        path = f"/artifacts/{MODEL}/{version}/{name}"
        sig = (self.reg.root / "artifacts" / MODEL / version / f"{name}.sig").read_bytes()
        self.files[path], self.files[path + ".sig"] = data, sig


@dataclass
class World:
    """What the devices, downloaders, MQTT clients and the publisher share."""

    http: aiohttp.ClientSession
    base: str
    mqtt_port: int
    arts: Artifacts
    running: dict[str, str]  # device -> the version it runs
    ledger: Ledger
    sink: Sink
    done: asyncio.Event
    last_run: bool = False  # the uplink stays away from the last start on
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))  # metric ids


async def fetch(
    w: World, path: str, *, start: int = 0, end: int | None = None, if_range: str | None = None
) -> tuple[int, str | None]:
    """One GET (ranged unless from 0 to the end); every body byte checked against the real file as
    it arrives. Returns the offset reached and the ETag, for a resume."""
    want, ledger = w.arts.files[path], w.ledger
    headers = {}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        if if_range:
            headers["If-Range"] = if_range
    offset, etag = start, None
    try:
        async with w.http.get(w.base + path, headers=headers) as r:
            ledger.answers += 1
            etag = r.headers.get("ETag")
            if r.status == 200:
                offset = 0
                if r.content_length is not None and r.content_length != len(want):
                    ledger.violations.append(f"{path}: 200 with length {r.content_length}, not {len(want)}")
            elif r.status == 206:
                m = CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", ""))
                if m is None or int(m[3]) != len(want):
                    ledger.violations.append(
                        f"{path}: 206 with Content-Range {r.headers.get('Content-Range')}"
                    )
                    return start, None
                offset = int(m[1])
            elif r.status == 503:
                ledger.unavailable += 1
                return start, None
            elif r.status >= 500:
                ledger.violations.append(f"{path}: {r.status}")
                return start, None
            else:
                return start, None  # 404 (not in the index yet, or retired), 416: nothing served
            ledger.bodies_verified += 1
            async for chunk in r.content.iter_chunked(1 << 16):
                if want[offset : offset + len(chunk)] != chunk:
                    ledger.violations.append(
                        f"{path}: {len(chunk)} bytes at {offset} differ from the artifact"
                    )
                    return start, None
                offset += len(chunk)
                ledger.bytes_verified += len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass  # killed mid-transfer: what arrived was checked; resume from there
    return offset, etag


async def downloader(w: World, rng: random.Random) -> None:
    """Random ranges of every published file, at random instants, resumed after a cut."""
    while not w.done.is_set():
        path = rng.choice(sorted(w.arts.files))
        size = len(w.arts.files[path])
        start = 0 if rng.random() < 0.3 else rng.randrange(size)
        end = None if rng.random() < 0.5 else min(size - 1, start + rng.randrange(1, 512 << 10))
        offset, etag = await fetch(w, path, start=start, end=end)
        if etag and offset < (size if end is None else end + 1) and rng.random() < 0.7:
            await fetch(w, path, start=offset, end=end, if_range=etag)  # resume
        await asyncio.sleep(rng.uniform(0.05, 0.4))


def metrics_body(version: str, n: int) -> dict[str, Any]:
    """Healthy metrics; ``num_inferences`` doubles as the message's id (an integer kept exactly)."""
    return {"model_id": MODEL, "model_version": version, "num_inferences": n, "num_errors": 0,
            "avg_latency_ms": 40.0, "cpu_percent": 30.0, "ram_percent": 40.0}  # fmt: skip


async def device(w: World, name: str, rng: random.Random) -> None:
    """Polls (a long poll for half of them), takes what it is offered, posts events and metrics."""
    long_poll, ledger = rng.random() < 0.5, w.ledger
    while not w.done.is_set():
        version = w.running[name]
        q = {"model_id": MODEL, "model_version": version, "hw": "rev2"}
        if long_poll:
            q["wait"] = "1"
        try:
            async with w.http.get(f"{w.base}/devices/{name}/updates", params=q) as r:
                ledger.answers += 1
                if r.status >= 500 and r.status != 503:
                    ledger.violations.append(f"poll from {name}: {r.status}")
                body: dict[str, Any] | None = await r.json() if r.status == 200 else None
            if body is not None and body.get("version") != version:
                offered = body["version"]
                if not body.get("rollback") and offered != "1.0.0":
                    ledger.offered(offered, name)
                path = f"/artifacts/{MODEL}/{offered}/{MODEL}-{offered}.bin"
                if path in w.arts.files and rng.random() < 0.5:
                    await fetch(w, path)
                w.running[name] = offered
                event = {"event": "activated", "model_id": MODEL, "version": offered}
                await w.http.post(f"{w.base}/devices/{name}/events", json=event)
            if rng.random() < 0.6:
                n = next(w.ids)
                url = f"{w.base}/devices/{name}/metrics"
                async with w.http.post(url, json=metrics_body(w.running[name], n)) as r:
                    ledger.answers += 1
                    if r.status == 200:
                        ledger.acked.add((name, n))  # acknowledged: durable from here on
                    elif r.status >= 500 and r.status != 503:
                        ledger.violations.append(f"metrics from {name}: {r.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass  # the gateway is down or restarting: try again on the next poll
        await asyncio.sleep(rng.uniform(0.4, 1.2))  # the device's own jittered interval


def _mqtt_packet(kind: int, body: bytes) -> bytes:
    """An MQTT 3.1.1 packet: fixed header (type and flags in ``kind``), remaining length, body."""
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([kind]) + bytes(length) + body


def _mqtt_str(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


async def _mqtt_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        digit = (await reader.readexactly(1))[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return kind, await reader.readexactly(length)


async def mqtt_client(w: World, names: list[str], rng: random.Random) -> None:
    """Devices publishing metrics at QoS 1 over a raw socket: a message counts as acknowledged once
    its PUBACK (with its packet id) is read off the socket, not before."""
    while not w.done.is_set():
        name = rng.choice(names)
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", w.mqtt_port), 2)
            connect = _mqtt_str("MQTT") + bytes([4, 0x02]) + (30).to_bytes(2, "big") + _mqtt_str(name)
            writer.write(_mqtt_packet(0x10, connect))  # CONNECT, MQTT 3.1.1, clean session
            kind, body = await asyncio.wait_for(_mqtt_read(reader), 5)
            if kind != 0x20 or body[1] != 0:
                raise ConnectionError(f"CONNACK {kind:#x} {body!r}")
            topic = _mqtt_str(f"devices/{name}/metrics")
            for pid in range(1, rng.randint(2, 8)):
                n = next(w.ids)
                payload = json.dumps(metrics_body(w.running[name], n)).encode()
                writer.write(_mqtt_packet(0x32, topic + pid.to_bytes(2, "big") + payload))  # QoS 1
                kind, body = await asyncio.wait_for(_mqtt_read(reader), 5)
                if kind == 0x40 and int.from_bytes(body[:2], "big") == pid:
                    w.ledger.acked.add((name, n))
                    w.ledger.acked_mqtt += 1
                await asyncio.sleep(rng.uniform(0.0, 0.2))
            writer.write(b"\xe0\x00")  # DISCONNECT
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ConnectionError, IndexError):
            pass  # killed mid-session: what had no PUBACK was never acknowledged
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(rng.uniform(0.05, 0.3))


async def publisher(w: World, reg: Registry, rng: random.Random) -> None:
    """New signed indexes with new large artifacts, at random instants."""
    for major in itertools.count(2):
        await asyncio.sleep(rng.uniform(2.0, 6.0))
        if w.done.is_set():
            return
        version = f"{major}.0.0"
        data = rng.randbytes(BIG_BYTES)
        await asyncio.to_thread(reg.publish, data, model_id=MODEL, version=version, health=HEALTH)
        w.arts.add(version, data)
        w.ledger.published.append(version)


async def uplink_outages(w: World, rng: random.Random) -> None:
    """The cloud's ingest goes away and comes back at random instants, so the outbox fills."""
    while True:
        await asyncio.sleep(rng.uniform(1.0, 6.0))
        if w.done.is_set() or w.last_run:
            return
        w.sink.down = not w.sink.down


NGINX_LINE = re.compile(r'GET (\S+) HTTP/[\d.]+ "([^"]*)" (\d+) (\d+)')


def upstream_figures(lines: list[str], arts: Artifacts, ledger: Ledger) -> None:
    """From nginx's log: artifact transfers a kill cut short, resumes, index fetches."""
    for line in lines:
        m = NGINX_LINE.match(line)
        if m is None:
            continue
        path, rng, status, sent = m[1], m[2], int(m[3]), int(m[4])
        if path.endswith("index.json"):
            ledger.index_fetches += 1
        want = arts.files.get(path)
        if want is None or status not in (200, 206) or path.endswith(".sig"):
            continue
        r = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        expected = len(want) if r is None else (int(r[2]) + 1 if r[2] else len(want)) - int(r[1])
        ledger.upstream_resumed += r is not None and r[1] != "0"
        ledger.upstream_cut += sent < expected


def read_outbox(path: Path) -> tuple[dict[int, tuple[str, dict[str, Any]]], list[tuple[str, str, int]]]:
    """Every record left in the outbox (after the gateway stopped) and the unreported drop counts."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT seq, kind, body FROM records ORDER BY seq").fetchall()
        drops = db.execute("SELECT kind, reason, count FROM drops").fetchall()
    finally:
        db.close()
    return {seq: (kind, json.loads(body)) for seq, kind, body in rows}, drops


def check_nothing_acknowledged_was_lost(outbox_path: Path, sink: Sink, ledger: Ledger) -> None:
    outbox, drops = read_outbox(outbox_path)
    assert not drops, f"the outbox dropped records: {drops}"
    reported = [r["body"] for r in sink.by_seq.values() if r["kind"] == "drops"]
    assert not reported, f"the outbox reported drops: {reported}"
    if outbox:
        seqs = sorted(outbox)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a hole in the outbox's sequence numbers"
    every = {**{s: (r["kind"], r["body"]) for s, r in sink.by_seq.items()}, **outbox}
    if every:
        holes = sorted(set(range(1, max(every) + 1)) - set(every))
        assert not holes, f"sequence numbers neither in the outbox nor at the sink: {holes[:10]}"
    kept = {(b["device_id"], b["inferences"]) for kind, b in every.values() if kind == "sample"}
    lost = ledger.acked - kept
    assert not lost, f"{len(lost)} acknowledged metrics lost, e.g. {sorted(lost)[:5]}"
    ledger.outbox = (
        f"seq 1..{max(every, default=0)}: {len(outbox)} records left in the outbox, "
        f"{len(sink.by_seq)} at the sink, {len(kept)} samples"
    )


async def kill_and_restart(gw: Process, w: World, rng: random.Random, kills: int) -> None:
    """The crash points: each kill at a random instant, sometimes before the start check."""
    ledger = w.ledger
    for i in range(kills):
        if rng.random() < 0.15:
            await asyncio.sleep(rng.uniform(0.0, 1.5))  # a kill during start-up (or recovery)
            ledger.startup_kills += 1
        else:
            problem = await started(gw, w.http, ledger)
            assert problem is None, f"start {ledger.starts}: {problem}\n{gw.tail()}"
            ledger.starts_checked += 1
            await asyncio.sleep(rng.uniform(0.0, 2.5))
        assert gw.exited() is None, f"exited by itself ({gw.exited()})\n{gw.tail()}"
        gw.kill()
        ledger.kills += 1
        if i == kills - 1:  # what the last run journals stays in the outbox, to be read there
            w.last_run, w.sink.down = True, True
        gw.spawn()
        ledger.starts += 1
    problem = await started(gw, w.http, ledger)
    assert problem is None, f"final start: {problem}\n{gw.tail()}"
    ledger.starts_checked += 1
    await asyncio.sleep(rng.uniform(1.0, 3.0))  # the world goes on a while before the last stop


async def crash_points(reg: Registry, tmp: Path, seed: int, kills: int) -> Ledger:
    rng = random.Random(seed)
    ledger = Ledger()
    arts = Artifacts(reg)
    first = rng.randbytes(20_000)
    reg.publish(first, model_id=MODEL, version="1.0.0", health=HEALTH)
    arts.add("1.0.0", first)
    sink = Sink(ledger)
    await sink.start()
    data = tmp / "data"
    env = {
        "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3",
        "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.1",
        "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.5",
        "OTA_GATEWAY_TELEMETRY__WINDOW_S": "0.5",  # gate steps every 0.5 s
        "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "0.5",
        "OTA_GATEWAY_UPLINK__INGEST_URL": f"http://127.0.0.1:{sink.port}/ingest",
        "OTA_GATEWAY_GATES__MIN_SAMPLES": "4",
    }
    names = [f"cam-{i:03d}" for i in range(DEVICES)]
    timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
    try:
        with nginx(reg.root, limit_rate=RATE) as upstream:
            gw = Process(reg, upstream.url, data, env, tmp / "gateway.log")
            async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=300)
            ) as http:
                w = World(http, f"http://127.0.0.1:{gw.http_port}", gw.mqtt_port, arts,
                          dict.fromkeys(names, "1.0.0"), ledger, sink, asyncio.Event())  # fmt: skip
                gw.spawn()
                ledger.starts += 1
                problem = await started(gw, http, ledger)
                assert problem is None, f"first start: {problem}\n{gw.tail()}"
                ledger.starts_checked += 1
                actors = [
                    *(device(w, n, random.Random(f"{seed}-{n}")) for n in names),
                    *(downloader(w, random.Random(f"{seed}-dl{i}")) for i in range(3)),
                    *(mqtt_client(w, names[i::2], random.Random(f"{seed}-mqtt{i}")) for i in range(2)),
                    publisher(w, reg, random.Random(f"{seed}-publisher")),
                    uplink_outages(w, random.Random(f"{seed}-uplink")),
                ]
                world = [asyncio.create_task(a) for a in actors]
                try:
                    await kill_and_restart(gw, w, rng, kills)
                finally:
                    w.done.set()
                    await asyncio.wait_for(asyncio.gather(*world, return_exceptions=True), 30)
                    if gw.proc is not None:  # the last one stops gracefully, the sink still up
                        await asyncio.to_thread(stop, gw.proc, 30)
                assert gw.proc is not None and gw.proc.returncode == 0, f"stop: exit {gw.proc and gw.proc.returncode}\n{gw.tail()}"  # fmt: skip
            upstream_figures(upstream.access_log(), arts, ledger)
    finally:
        await sink.stop()
    check_nothing_acknowledged_was_lost(data / "outbox.sqlite", sink, ledger)
    return ledger


@pytest.mark.timeout(max(300, CRASH_POINTS * 12))
async def test_killed_at_random_points_it_restarts_serves_only_verified_bytes_and_loses_nothing(
    reg: Registry, tmp_path: Path
) -> None:
    ledger = await crash_points(reg, tmp_path, SEED, CRASH_POINTS)
    offered = {v: len(d) for v, d in ledger.exposed.items()}
    print(
        f"seed {SEED}: {ledger.kills} kills ({ledger.startup_kills} during start-up), "
        f"{ledger.starts - 1} restarts, {ledger.starts_checked} starts checked; "
        f"{ledger.bytes_verified} bytes verified in {ledger.bodies_verified} bodies "
        f"({ledger.unavailable} 503s); {len(ledger.acked)} metrics acknowledged "
        f"({ledger.acked_mqtt} by PUBACK), 0 lost; {ledger.answers} answers checked; "
        f"{len(ledger.published)} versions published, at most {max(offered.values(), default=0)} devices "
        f"offered each (wave 0 admits {FIRST_WAVE}; per version: {offered}); "
        f"upstream: {ledger.index_fetches} index fetches, {ledger.upstream_cut} artifact transfers cut "
        f"by a kill, {ledger.upstream_resumed} resumed; outbox {ledger.outbox}"
    )
    if ledger.violations:
        pytest.fail("\n".join(ledger.violations[:10]))
    assert ledger.kills == CRASH_POINTS
    assert ledger.acked and ledger.acked_mqtt and ledger.bytes_verified  # the world really acted
