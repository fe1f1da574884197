"""Benchmark: the uplink MQTT bridge at a 50 ms round trip, window 1 (the old behaviour) and the
configured window, beside a plain paho publisher with the same window, from the same spool.

Run: ``python tests/bench/bridge_rtt.py [--records 5000] [--old-records 200] [--window 100] [--rtt-ms 50]``

The cloud broker is Debian's mosquitto on loopback; between it and the publishers sits a small
asyncio TCP proxy that holds every chunk 25 ms in each direction (so a PUBLISH and its PUBACK make
one 50 ms round trip, as on a good LTE link). The spool is a real outbox file filled with sample
records like the ones devices' metrics make; the bridge delivers them as the forwarder does (one
``deliver`` per batch). The peer is paho itself: ``max_inflight_messages_set(window)``, publish
every record, wait for every PUBACK. Figures are records/s; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.uplink.outbox import Outbox, Record  # noqa: E402
from gateway.uplink.sinks import MqttBridge  # noqa: E402
from tests.peers import free_port, stop, wait_port  # noqa: E402


class DelayProxy:
    """Forwards TCP both ways, each chunk delivered ``delay_s`` after it was read, in order."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            # the publishers have hung up: each connection ends once its EOF has crossed
            await asyncio.wait(self.handlers, timeout=10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def later() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    writer.close()
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(later())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay_s, chunk))
        finally:
            queue.put_nowait((0.0, b""))
            await sender


def spool(work: Path, n: int) -> list[Record]:
    """A real outbox with ``n`` sample records, read back as the forwarder reads it."""
    box = Outbox(work / f"outbox-{n}.sqlite", max_bytes=1 << 30, max_age_s=86400, sinks=["mqtt"])

    async def fill() -> None:
        for i in range(n):
            body = {"device_id": f"cam-{i % 500}", "model_id": "detector", "model_version": "1.0.0",
                    "inferences": 100, "errors": 1, "latency_ms": 40.0 + i % 7, "cpu_percent": 30.0,
                    "ram_percent": 40.0, "class_counts": {"person": 90, "forklift": 10}}  # fmt: skip
            box.append_nowait("sample", body, time.time())
        await box.append("sample", {"device_id": "last"}, time.time())

    asyncio.run(fill())
    records = box.peek("mqtt", max_records=n + 1, max_bytes=1 << 30)
    box.close()
    return records[:n]


async def bridge_rate(port: int, records: Sequence[Record], window: int) -> float:
    bridge = MqttBridge(f"mqtt://127.0.0.1:{port}", "bench-site", window=window, timeout_s=60)
    await bridge.deliver(records[:1])  # connected before the clock starts
    t0 = time.perf_counter()
    await bridge.deliver(records)
    took = time.perf_counter() - t0
    await bridge.close()
    return len(records) / took


def paho_rate(port: int, records: Sequence[Record], window: int) -> float:
    """The peer: paho's own in-flight window, every record published, every PUBACK awaited."""
    done = 0
    import threading

    all_in = threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal done
        done += 1
        if done == len(records):
            all_in.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-peer")
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    payloads = [json.dumps({"site": "bench-site", **r.to_json()}, separators=(",", ":")) for r in records]
    t0 = time.perf_counter()
    for r, p in zip(records, payloads, strict=True):
        client.publish(f"sites/bench-site/{r.kind}", p, qos=1)
    all_in.wait(600)
    took = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return len(records) / took


async def measure(args: argparse.Namespace, mosquitto_port: int, work: Path) -> None:
    proxy = DelayProxy(mosquitto_port, args.rtt_ms / 2000)
    await proxy.start()
    records = await asyncio.to_thread(spool, work, args.records)
    try:
        old = await bridge_rate(proxy.port, records[: args.old_records], 1)
        print(f"bridge, window 1 (the old behaviour): {old:.1f} records/s ({args.old_records} records)")
        new = await bridge_rate(proxy.port, records, args.window)
        print(f"bridge, window {args.window}: {new:.0f} records/s ({args.records} records)")
        peer = await asyncio.to_thread(paho_rate, proxy.port, records, args.window)
        print(f"plain paho publisher, window {args.window}: {peer:.0f} records/s ({args.records} records)")
        print()
        print(
            f"at {args.rtt_ms:.0f} ms RTT: window {args.window} / window 1 = {new / old:.1f}x; bridge / paho peer = {new / peer:.2f}"
        )
    finally:
        await proxy.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--old-records", type=int, default=200)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--rtt-ms", type=float, default=50.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        asyncio.run(measure(args, port, work))
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
