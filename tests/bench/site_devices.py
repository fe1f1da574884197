"""The simulated devices of ``tests/bench/site_20k.py``: one load process's share of the site.

Each device is one MQTT 3.1.1 connection to the site broker (raw asyncio, a minimal encoder: a
device costs a protocol object, a few timers and its socket) and an HTTP poller:

- every 60 s it publishes its metrics at QoS 1 to ``devices/<id>/metrics``, its own clock in
  ``timestamp`` (which the gateway keeps in the outbox record: the message's identity and the start
  of its end-to-end time). A message is *acknowledged* when the broker's PUBACK comes; one not
  acknowledged when its connection drops is sent again after the reconnect (at least once, as an
  MQTT client does), with its original timestamp;
- every 5 minutes (the gateway's ``Retry-After``, jittered by the gateway) it polls
  ``/devices/<id>/updates`` with its model and version, on a new connection each time, and does
  what the answer says: a manifest of another version is downloaded, its sha256 checked, the device
  switches to it and says ``activated`` on ``devices/<id>/events``; a rollback answer (a manifest
  with ``rollback``, or ``204 rollback_previous_slot``) switches back;
- a lost broker connection is retried 1 to 5 s later (a restarted broker sees a reconnect storm).

It measures what only a device can: each poll's time from sending the request to the end of the
answer, and which messages the broker acknowledged. The load processes bind their own loopback
source address (127.0.1.<k>) so that 20,000 connections to one broker port do not run out of
ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import resource
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MODEL = "detector"
METRICS_EVERY_S = 60.0
KEEPALIVE_S = 150  # a device publishes every 60 s: no PINGREQ needed
RECONNECT_S = (1.0, 5.0)


@dataclass(frozen=True)
class Plan:
    first: int  # device numbers first .. first + count - 1
    count: int
    mqtt_port: int
    http_url: str
    source_ip: str
    start_at: float  # wall clock: publishing and polling begin
    end_at: float  # nothing new after this
    drain_s: float  # then at most this long for the last PUBACKs
    seed: int
    baseline: str


@dataclass
class Report:
    acked: list[tuple[str, float, float]] = field(default_factory=list)  # device, timestamp, PUBACK at
    unacked: int = 0
    poll_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    switches: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: int = 0
    never_connected: int = 0  # devices the broker never took (its descriptors, say)
    nofile: tuple[int, int] = (0, 0)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def connect_packet(client_id: str) -> bytes:
    # MQTT 3.1.1, clean session, user name = the device id (the README's ACL pattern)
    return _packet(
        0x10, _utf8("MQTT") + bytes([4, 0x82]) + struct.pack("!H", KEEPALIVE_S) + _utf8(client_id) * 2
    )


def publish_packet(topic: str, pid: int, payload: bytes) -> bytes:
    return _packet(0x32, _utf8(topic) + struct.pack("!H", pid) + payload)


class Link(asyncio.Protocol):
    """One device's broker connection: CONNACK and PUBACK are all it reads."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(connect_packet(self.device.id))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 2:
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(self.buf):
                    return
                b = self.buf[i]
                length += (b & 0x7F) * mult
                mult, i = mult * 128, i + 1
                if not b & 0x80:
                    break
            if len(self.buf) < i + length:
                return
            kind, body = self.buf[0] >> 4, bytes(self.buf[i : i + length])
            del self.buf[: i + length]
            if kind == 2:
                self.device.connected(self, body[1] == 0)
            elif kind == 4:
                self.device.puback(struct.unpack("!H", body[:2])[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.device.lost(self)


class Device:
    def __init__(self, n: int, site: Site) -> None:
        self.id = f"dev-{n:05d}"
        self.site = site
        self.rnd = random.Random(n)
        self.version = site.plan.baseline
        self.previous = site.plan.baseline
        self.hw = f"rev{n % 3 + 1}"
        self.link: Link | None = None
        self.up = self.ever_up = False
        self.pending: dict[int, tuple[str, float, bytes]] = {}  # pid -> (topic, timestamp, payload)
        self.pid = 0
        self.started = time.time()

    # -- MQTT ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        async with self.site.connecting:
            try:
                await loop.create_connection(
                    lambda: Link(self),
                    "127.0.0.1",
                    self.site.plan.mqtt_port,
                    local_addr=(self.site.plan.source_ip, 0),
                )
            except OSError:
                self.site.report.connect_failures += 1
                loop.call_later(self.rnd.uniform(*RECONNECT_S), self.site.spawn, self.connect())

    def connected(self, link: Link, ok: bool) -> None:
        if not ok:
            if link.transport is not None:
                link.transport.close()
            return
        self.link, self.up, self.ever_up = link, True, True
        self.site.report.connects += 1
        for pid, (topic, _stamp, payload) in self.pending.items():  # not acknowledged: again
            self._write(publish_packet(topic, pid, payload))

    def lost(self, link: Link) -> None:
        if link is not self.link:
            self.site.spawn(self._reconnect_later())
            return
        self.link, self.up = None, False
        if not self.site.closing:
            self.site.spawn(self._reconnect_later())

    async def _reconnect_later(self) -> None:
        await asyncio.sleep(self.rnd.uniform(*RECONNECT_S))
        if not self.site.closing and not self.up:
            await self.connect()

    def _write(self, data: bytes) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.write(data)

    def send(self, topic: str, doc: dict[str, Any], stamp: float) -> None:
        self.pid = self.pid % 65535 + 1
        payload = json.dumps(doc, separators=(",", ":")).encode()
        if self.pid not in self.pending:
            self.site.outstanding += 1
        self.pending[self.pid] = (topic, stamp, payload)
        if self.up:
            self._write(publish_packet(topic, self.pid, payload))

    def puback(self, pid: int) -> None:
        item = self.pending.pop(pid, None)
        if item is None:
            return
        self.site.outstanding -= 1
        if self.site.outstanding == 0:
            self.site.drained.set()
        if item[0].endswith("/metrics"):
            self.site.report.acked.append((self.id, item[1], time.time()))

    def metrics(self) -> None:
        if time.time() >= self.site.plan.end_at:
            return
        asyncio.get_running_loop().call_later(METRICS_EVERY_S, self.metrics)
        if not self.up:  # a device measures again next minute; nothing to send meanwhile
            return
        n = 600 + self.rnd.randint(-50, 50)
        person = int(n * self.rnd.uniform(0.85, 0.95))
        now = time.time()
        doc = {"device_id": self.id, "timestamp": now, "model_id": MODEL, "model_version": self.version,
               "num_inferences": n, "num_errors": self.rnd.choice((0, 0, 0, 1)),
               "avg_latency_ms": round(self.rnd.gauss(40, 4), 2), "cpu_percent": round(self.rnd.gauss(30, 3), 1),
               "ram_percent": round(self.rnd.gauss(40, 2), 1), "uptime_seconds": round(now - self.started),
               "class_counts": {"person": person, "forklift": n - person}, "mean_confidence": 0.8}  # fmt: skip
        self.send(f"devices/{self.id}/metrics", doc, now)

    # -- HTTP ------------------------------------------------------------------------------------

    async def poll_forever(self) -> None:
        plan = self.site.plan
        await asyncio.sleep(max(0.0, plan.start_at - time.time()) + self.rnd.uniform(0, 300))
        while time.time() < plan.end_at:
            try:
                wait_s = await self.poll()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                self.site.report.answers[f"error {type(exc).__name__}"] += 1
                wait_s = self.rnd.uniform(10, 30)
            await asyncio.sleep(wait_s)

    async def poll(self) -> float:
        url = f"{self.site.plan.http_url}/devices/{self.id}/updates"
        query = {"model_id": MODEL, "model_version": self.version, "hw": self.hw}
        t0 = time.perf_counter()
        async with self.site.http.get(url, params=query) as r:
            body = await r.read()
            self.site.report.poll_ms.append((time.perf_counter() - t0) * 1000)
            reason = r.headers.get("X-OTA-Reason", "")
            self.site.report.answers[f"{r.status} {reason}".strip()] += 1
            retry = float(r.headers.get("Retry-After", 300))
        if r.status == 200:
            manifest = json.loads(body)
            if manifest["version"] != self.version:
                await self.install(manifest)
        elif r.status == 204 and reason == "rollback_previous_slot":
            self.switch(self.previous)
        return retry

    async def install(self, manifest: dict[str, Any]) -> None:
        async with self.site.http.get(manifest["artifact_url"]) as r:
            r.raise_for_status()
            data = await r.read()
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise ValueError("sha256 mismatch")
        self.switch(manifest["version"])

    def switch(self, version: str) -> None:
        self.previous, self.version = self.version, version
        self.site.report.switches += 1
        doc = {"event": "activated", "model_id": MODEL, "version": version}
        self.send(f"devices/{self.id}/events", doc, time.time())


class Site:
    """One load process's devices, its connection pool for polls, and what they saw."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.report = Report()
        self.closing = False
        self.outstanding = 0  # messages sent and not acknowledged, over all devices
        self.drained = asyncio.Event()
        self.connecting = asyncio.Semaphore(100)  # a ramp, not 5,000 SYNs at once
        self.tasks: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=200, force_close=True, local_addr=(plan.source_ip, 0))
        timeout = aiohttp.ClientTimeout(total=60)
        self.http = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        self.devices = [Device(plan.first + i, self) for i in range(plan.count)]

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> Report:
        loop = asyncio.get_running_loop()
        for d in self.devices:
            self.spawn(d.connect())
            self.spawn(d.poll_forever())
            first = self.plan.start_at + d.rnd.uniform(0, METRICS_EVERY_S) - time.time()
            loop.call_later(max(0.0, first), d.metrics)
        await asyncio.sleep(max(0.0, self.plan.end_at - time.time()))
        if self.outstanding:
            self.drained.clear()
            with contextlib.suppress(TimeoutError):  # the last PUBACKs, within drain_s
                await asyncio.wait_for(self.drained.wait(), self.plan.drain_s)
        self.closing = True
        for d in self.devices:
            self.report.unacked += sum(1 for t, _s, _p in d.pending.values() if t.endswith("/metrics"))
            self.report.versions[d.version] += 1
            self.report.never_connected += not d.ever_up
            if d.link is not None and d.link.transport is not None:
                d.link.transport.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()
        return self.report


def raise_nofile() -> tuple[int, int]:
    """The descriptor limit as far as the hard limit allows (raising the hard one needs privileges)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def load_process(plan: Plan, out: Any) -> None:
    """A load process's body (``multiprocessing``): its own event loop; the report goes to ``out``."""
    limits = raise_nofile()

    async def main() -> Report:
        return await Site(plan).run()

    report = asyncio.run(main())
    report.nofile = limits
    out.put(report)
