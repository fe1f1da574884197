"""Chaos: every long-lived task made to raise at a random instant; each comes back within its
backoff, nothing acknowledged is lost, and one that keeps failing stops the gateway's readiness and
its systemd watchdog.

The faults come from the test-only setting ``supervision.inject_faults``
(:class:`gateway.core.supervision.FaultPlan`): the supervisor cancels a task's run at the instant
the seed draws, which raises at whatever the task awaits then. Everything else is real: MQTT QoS 1
metrics through the embedded broker (a PUBACK means the gateway journaled it), an HTTP ingest on
loopback as the cloud, the signed registry folder, ``/status`` and ``/readyz`` over HTTP, and, in
the second test, a real ``serve`` process with ``NOTIFY_SOCKET`` on a datagram socket the test
reads. ``CHAOS_SEEDS`` (default 20) and ``CHAOS_PROCESS_SEEDS`` (default 1) set the counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import pytest
from aiohttp import web

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import ROOT, IngestServer, free_port, gateway_process, ingest_batch, stop
from tests.runtime.test_sdnotify import receive_until

SEEDS = int(os.environ.get("CHAOS_SEEDS", "20"))
PROCESS_SEEDS = int(os.environ.get("CHAOS_PROCESS_SEEDS", "1"))
TASKS = {
    "mirror-poll",
    "bundle-imports",
    "site-loop",
    "readiness-log",
    "blob-scrub",
    "uplink",
    "mqtt-keepalive-sweep",
}
MAX_BACKOFF_S = 0.25
FAULTS_WITHIN_S = (0.05, 0.8)


class Ingest(IngestServer):
    """The cloud: keeps the marker (``latency_ms``) of every metrics sample it receives."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.markers: set[float] = set()

    async def handle(self, request: web.Request) -> web.Response:
        doc = await ingest_batch(request)
        self.markers.update(r["body"]["latency_ms"] for r in doc["records"] if r["kind"] == "sample")
        return web.Response(status=204)


class Device:
    """One device publishing metrics at QoS 1 from paho's thread; ``acked`` are those PUBACKed."""

    def __init__(self, device_id: str, port: int) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.on_publish = self._puback
        self.port = port
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}  # paho mid -> marker
        self.pubacks: set[int] = set()

    def _puback(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            self.pubacks.add(mid)

    def acked(self) -> set[float]:
        with self.lock:
            return {marker for mid, marker in self.sent.items() if mid in self.pubacks}

    async def run(self, stop_at: asyncio.Event, rng: random.Random) -> None:
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port)
        self.client.loop_start()
        n = 0
        while not stop_at.is_set():
            n += 1
            marker = float(n)
            body = {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10,
                    "num_errors": 0, "avg_latency_ms": marker}  # fmt: skip
            with self.lock:
                info = self.client.publish("devices/cam-1/metrics", json.dumps(body), qos=1)
                self.sent[info.mid] = marker
            await asyncio.sleep(rng.uniform(0.002, 0.02))

    async def close(self) -> None:
        await asyncio.to_thread(self.client.disconnect)
        await asyncio.to_thread(self.client.loop_stop)


async def status(http: aiohttp.ClientSession, gw: Gateway) -> dict[str, Any]:
    host, port = gw.operator_addresses[0][:2]
    async with http.get(f"http://{host}:{port}/status") as r:
        doc: dict[str, Any] = await r.json()
        return doc


async def watch_tasks(http: aiohttp.ClientSession, gw: Gateway, deadline_s: float) -> dict[str, Any]:
    """Poll ``/status`` until every task crashed once and runs again; on every look, a task waiting
    to restart has waited no longer than its backoff allows."""
    end = time.monotonic() + deadline_s
    while True:
        tasks = {t["name"]: t for t in (await status(http, gw))["tasks"]}
        assert set(tasks) >= TASKS, tasks
        for t in tasks.values():
            if t["state"] == "restarting":
                # waiting past its backoff (1 s of slack: the loop of a busy two-core box)
                assert t["last_failure_ago_s"] <= MAX_BACKOFF_S + 1.0, t
            assert not t["failing"], t
        if all(tasks[n]["restarts"] >= 1 and tasks[n]["state"] == "running" for n in TASKS):
            return tasks
        assert time.monotonic() < end, f"tasks not all back: {tasks}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_every_task_crashes_at_a_random_instant_comes_back_and_loses_nothing(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(os.urandom(20_000), version="1.0.0")
    ingest = Ingest(free_port())
    await ingest.start()
    low, high = FAULTS_WITHIN_S
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        uplink={"ingest_url": f"http://127.0.0.1:{ingest.port}/ingest", "report_interval_s": 0.3},
        supervision={
            "restart_initial_s": 0.05,
            "restart_max_s": MAX_BACKOFF_S,
            "failing_after": 1000,
            "inject_faults": f"seed={seed};after={low}-{high};times=1",
        },
    )
    stop_publishing = asyncio.Event()
    try:
        async with running(settings) as gw, aiohttp.ClientSession() as http:
            assert gw.broker is not None
            device = Device("cam-1", gw.broker.addresses["tcp"][1])
            publisher = asyncio.create_task(device.run(stop_publishing, rng))
            try:
                tasks = await watch_tasks(http, gw, high + MAX_BACKOFF_S + 10)
                assert all(tasks[n]["restarts"] == 1 for n in TASKS), tasks  # once, as the plan says
                reg.publish(os.urandom(20_000), version="2.0.0")  # the restarted mirror poll takes it
                await until(lambda: gw.mirror.index is not None and gw.mirror.index.version >= 2, what="v2")
                await asyncio.sleep(rng.uniform(0, 0.2))
            finally:
                stop_publishing.set()
                await publisher
                await asyncio.sleep(0.2)  # the last PUBACKs in flight
                await device.close()
            acked = device.acked()
            assert len(acked) > 10
            await until(lambda: acked <= ingest.markers, timeout_s=20, what="every acknowledged sample")
    finally:
        await ingest.stop()


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("seed", range(PROCESS_SEEDS))
def test_a_task_that_keeps_failing_makes_the_gateway_not_ready_and_stops_the_watchdog(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    reg.publish(os.urandom(20_000), version="1.0.0")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    http = free_port()
    args = ["--data", str(tmp_path / "data"), "--upstream", str(reg.root), "--trusted-key", str(reg.public_key),
            "--http", f"127.0.0.1:{http}", "--operator", f"127.0.0.1:{free_port()}",
            "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "WATCHDOG_USEC": "400000",  # pings every 0.2 s
        "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.2",
        "OTA_GATEWAY_SUPERVISION__RESTART_INITIAL_S": "0.05",
        "OTA_GATEWAY_SUPERVISION__RESTART_MAX_S": "0.2",
        "OTA_GATEWAY_SUPERVISION__FAILING_AFTER": "4",
        # every task (the watchdog too) crashes once; the site loop on every run
        "OTA_GATEWAY_SUPERVISION__INJECT_FAULTS": f"seed={seed};after=0.1-0.5;times=1;always=site-loop",
    }
    err = (tmp_path / "stderr").open("wb")
    proc = gateway_process(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        receive_until(sock, lambda m: any("WATCHDOG" in x for x in m), 60)  # fed while healthy
        receive_until(sock, lambda m: any("keeps failing" in x.get("STATUS", "") for x in m), 60)
        code, doc = readyz(http)
        assert code == 503 and any("task site-loop keeps failing" in r for r in doc["reasons"]), doc
        # From now on: STATUS lines still come (the watchdog task runs), but no ping.
        quiet = receive_until(sock, lambda m: len(m) >= 8, 30)
        assert not any("WATCHDOG" in m for m in quiet), quiet
        assert all("task site-loop keeps failing" in m["STATUS"] for m in quiet), quiet
        assert proc.poll() is None  # systemd, not the gateway, decides to restart the process
    finally:
        stop(proc)
        err.close()
        sock.close()
