"""The outage story with real peers: the HTTP ingest and a mosquitto cloud broker are down, devices
keep reporting, the gateway is kill -9'ed and restarted in the middle, the link comes back: every
record arrives on both sinks, duplicates only by sequence number, nothing lost.

The cloud's subscriber holds a persistent session at the cloud broker from before the gateway
first runs, as a cloud's ingest does: the broker keeps what the gateway publishes for it even
while it is (re)connecting. With a fresh session made after the broker came back, the gateway's
bridge could publish everything in the moment before the subscription, and the broker would
drop it for want of a subscriber (a test race, not a loss: `.ci/run` met it once on a busy box).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
from aiohttp import web

from tests.conftest import Registry
from tests.peers import IngestServer, free_port, gateway_process, ingest_batch, need, stop, wait_port


class Ingest(IngestServer):
    """The cloud's HTTP ingest: dedupes by (site, seq), as the contract says the cloud does."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.by_seq: dict[int, dict[str, Any]] = {}
        self.deliveries = 0

    async def handle(self, request: web.Request) -> web.Response:
        doc = await ingest_batch(request)
        for r in doc["records"]:
            assert self.by_seq.setdefault(r["seq"], r) == r  # a duplicate is the same record
        self.deliveries += 1
        return web.Response(status=204)


@contextmanager
def mosquitto(port: int, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    conf = tmp / "mosquitto.conf"
    (tmp / "mosquitto-db").mkdir(exist_ok=True)
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp}/mosquitto-db/\nmax_queued_messages 100000\nuser {getpass.getuser()}\n"
    )
    proc = subprocess.Popen(
        [need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        yield proc
    finally:
        stop(proc)


def start_gateway(data: Path, reg: Registry, http: int, ingest: int, mqtt: int) -> subprocess.Popen[bytes]:
    env = {
        "OTA_GATEWAY_UPLINK__INGEST_URL": f"http://127.0.0.1:{ingest}/ingest",
        "OTA_GATEWAY_UPLINK__MQTT_URL": f"mqtt://127.0.0.1:{mqtt}",
        "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "0.5",
        "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1",
        "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.5",
    }
    args = ["--data", str(data), "--upstream", str(reg.root), "--site", "test-site", "--http", f"127.0.0.1:{http}",
            "--operator", f"127.0.0.1:{free_port()}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = gateway_process(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, 30)
    return proc


def cloud_subscriber(port: int, on_message: Any = None) -> paho.Client:
    """The cloud's subscriber to the site's topics, on its persistent session; returns once the
    broker has granted the subscription."""
    subscribed = threading.Event()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cloud", clean_session=False)
    sub.on_connect = lambda c, *_: c.subscribe("sites/test-site/#", 1)
    sub.on_subscribe = lambda *_: subscribed.set()
    if on_message is not None:
        sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    assert subscribed.wait(30), "the cloud broker did not grant the subscription"
    return sub


async def report(http: int, count: int, start: int) -> None:
    async with aiohttp.ClientSession() as s:
        for i in range(start, start + count):
            body = {
                "model_version": "1.0.0",
                "model_id": "detector",
                "num_inferences": 10,
                "num_errors": 0,
                "avg_latency_ms": float(i),
            }
            async with s.post(f"http://127.0.0.1:{http}/devices/cam-{i % 5}/metrics", json=body) as r:
                assert r.status == 200  # acknowledged: durable from here on


async def test_outage_kill_9_and_recovery_lose_nothing(reg: Registry, tmp_path: Path) -> None:
    http, ingest_port, mqtt_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    with mosquitto(mqtt_port, tmp_path):  # the cloud's session, before the gateway ever runs
        first = await asyncio.to_thread(cloud_subscriber, mqtt_port)
        first.loop_stop()
        first.disconnect()
    gw = start_gateway(data, reg, http, ingest_port, mqtt_port)
    try:
        await report(http, 30, 0)  # the uplink is down
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        gw = start_gateway(data, reg, http, ingest_port, mqtt_port)
        await report(http, 30, 30)
        received: dict[int, dict[str, Any]] = {}
        loop = asyncio.get_running_loop()
        ingest = Ingest(ingest_port)
        with mosquitto(mqtt_port, tmp_path):
            await ingest.start()

            def take(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
                doc = json.loads(m.payload)
                loop.call_soon_threadsafe(lambda: received.setdefault(doc["seq"], doc))

            sub = await asyncio.to_thread(cloud_subscriber, mqtt_port, take)
            try:

                def samples(records: dict[int, dict[str, Any]]) -> set[float]:
                    return {r["body"]["latency_ms"] for r in records.values() if r["kind"] == "sample"}

                deadline = loop.time() + 60
                while loop.time() < deadline:
                    aggregates = any(r["kind"] == "aggregate" for r in ingest.by_seq.values())
                    if len(samples(ingest.by_seq)) == 60 and len(samples(received)) >= 60 and aggregates:
                        break
                    await asyncio.sleep(0.1)
                assert samples(ingest.by_seq) == {float(i) for i in range(60)}
                assert {float(i) for i in range(60)} <= samples(received)
                assert any(r["kind"] == "aggregate" for r in ingest.by_seq.values())
            finally:
                sub.loop_stop()
                sub.disconnect()
                await ingest.stop()
    finally:
        stop(gw)
