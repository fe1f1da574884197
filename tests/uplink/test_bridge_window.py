"""The uplink MQTT bridge's in-flight window, against Debian's mosquitto as the cloud broker.

Between the bridge and mosquitto sits a small TCP proxy the test controls: it can hold back what
the broker sends (the PUBACKs) and cut every connection at once.

- with the PUBACKs held back, a whole window of records reaches the cloud's subscriber: the bridge
  does not wait for one PUBACK before the next record (the old bridge sent one, then stalled);
- the link is cut at random instants while the forwarder drains the outbox: the outbox cursor never
  passes a record the broker did not acknowledge (every record up to the cursor reaches the
  subscriber) and in the end every record arrives, duplicates only by sequence number.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runtime.stats import Stats
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox
from gateway.uplink.sinks import MqttBridge
from tests.broker.conftest import until
from tests.peers import free_port, need, stop, wait_port

pytestmark = pytest.mark.peer


class Proxy:
    """TCP to ``upstream``; ``hold`` keeps the broker's bytes back (after the first chunk, the
    CONNACK) until ``release``; ``cut`` closes every connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.held = False
        self.release_event = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool) -> None:
        first = True
        try:
            while chunk := await reader.read(65536):
                if down and self.held and not first:
                    await self.release_event.wait()
                first = False
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(
        [need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        yield port
    finally:
        stop(proc)


class Cloud:
    """The cloud's subscriber on ``sites/#``, straight to mosquitto: records by sequence number."""

    def __init__(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.by_seq: dict[int, dict[str, Any]] = {}
        self.ready = asyncio.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cloud")
        self.client.on_connect = lambda c, *_: c.subscribe("sites/#", 1)
        self.client.on_subscribe = lambda *_: loop.call_soon_threadsafe(self.ready.set)
        self.client.on_message = lambda _c, _u, m: loop.call_soon_threadsafe(self._take, m.payload)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _take(self, payload: bytes) -> None:
        doc = json.loads(payload)
        assert self.by_seq.setdefault(doc["seq"], doc) == doc  # a duplicate is the same record

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def cloud(mosquitto: int) -> AsyncIterator[Cloud]:
    c = Cloud(mosquitto)
    await until(c.ready.is_set, what="the cloud subscribed")
    yield c
    c.close()


@pytest.fixture
async def proxy(mosquitto: int) -> AsyncIterator[Proxy]:
    p = Proxy(mosquitto)
    await p.start()
    yield p
    await p.stop()


async def fill(outbox: Outbox, n: int) -> list[int]:
    pending = [outbox.append_nowait("sample", {"n": i, "device_id": f"cam-{i % 7}"}, 1.0) for i in range(n)]
    return list(await asyncio.gather(*pending))  # one group commit, not n


async def test_a_whole_window_is_in_flight_before_any_puback(
    tmp_path: Path, cloud: Cloud, proxy: Proxy
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 24, max_age_s=3600, sinks=["mqtt"])
    await fill(outbox, 120)
    records = outbox.peek("mqtt", max_records=120)
    bridge = MqttBridge(f"mqtt://127.0.0.1:{proxy.port}", "s1", window=50, timeout_s=30)
    try:
        proxy.held = True
        delivery = asyncio.create_task(bridge.deliver(records))
        # no PUBACK has reached the bridge, yet a window of records is at the cloud already
        await until(lambda: len(cloud.by_seq) >= 50, 20, what="a window of records in flight")
        assert len(cloud.by_seq) == 50  # and not more: the window is bounded
        assert not delivery.done()
        proxy.release_event.set()
        await asyncio.wait_for(delivery, 30)
        await until(lambda: len(cloud.by_seq) == 120, what="every record")
    finally:
        await bridge.close()
        outbox.close()


@pytest.mark.parametrize("seed", range(3))
async def test_cuts_never_move_the_cursor_past_an_unacknowledged_record(
    seed: int, tmp_path: Path, cloud: Cloud, proxy: Proxy
) -> None:
    rnd = random.Random(seed)
    outbox = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 26, max_age_s=3600, sinks=["mqtt"])
    seqs = await fill(outbox, 8000)
    bridge = MqttBridge(f"mqtt://127.0.0.1:{proxy.port}", "s1", window=rnd.choice([7, 100, 500]), timeout_s=5)
    forwarder = Forwarder(outbox, [bridge], Stats(), retry_initial_s=0.05, retry_max_s=0.2, idle_s=0.05)
    task = asyncio.create_task(forwarder.run())
    try:
        for _ in range(6):
            await asyncio.sleep(rnd.random() * 0.3)  # a random instant, whatever the bridge is doing
            proxy.cut()
            cursor = await asyncio.to_thread(outbox.acked, "mqtt")
            # what the cursor passed was acknowledged by the broker, so the cloud gets all of it
            await until(
                lambda c=cursor: all(s in cloud.by_seq for s in seqs if s <= c),  # type: ignore[misc]
                10,
                what=f"every record up to the cursor {cursor}",
            )
        await until(lambda: len(cloud.by_seq) == len(seqs), 60, what="every record, in the end")
        assert sorted(cloud.by_seq) == seqs
        await until(lambda: outbox.acked("mqtt") == seqs[-1], 10, what="the cursor at the end")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await forwarder.close()
        outbox.close()
