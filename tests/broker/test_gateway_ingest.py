"""The broker inside the gateway: device credentials from the device API, metrics durable before the
PUBACK and aggregated, invalid metrics counted, the gateway telling devices about updates.
(Broker-level behaviour, hostile packets and limits: tests/broker/test_broker.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import need

TOKENS = {"cam-1": "token-of-cam-1", "cam-2": "token-of-cam-2"}
METRICS = {
    "model_version": "1.0.0",
    "model_id": "detector",
    "avg_latency_ms": 42.0,
    "num_inferences": 100,
    "num_errors": 1,
    "cpu_percent": 30.0,
    "ram_percent": 40.0,
    "class_counts": {"person": 90, "forklift": 10},
}


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tokens)},
        mqtt={"max_packet_bytes": 4096, "max_connections": 20},
        telemetry={"window_s": 1.0},
    )
    async with running(settings) as g:
        yield g


def mqtt_port(gw: Gateway) -> int:
    assert gw.broker is not None
    return gw.broker.addresses["tcp"][1]


async def pub(gw: Gateway, user: str, password: str, topic: str, payload: str, qos: int = 1) -> int:
    cmd = [need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(mqtt_port(gw)), "-i", user, "-u", user,
           "-P", password, "-q", str(qos), "-t", topic, "-m", payload]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0


async def test_device_metrics_over_mqtt_reach_the_aggregate(gw: Gateway) -> None:
    assert await pub(gw, "cam-1", TOKENS["cam-1"], "devices/cam-1/metrics", json.dumps(METRICS)) == 0
    assert gw.stats["telemetry.samples"] == 1  # ingested before the PUBACK that ended mosquitto_pub
    rec = gw.inventory.get("cam-1")
    assert rec is not None and rec.model_version == "1.0.0" and "metrics" in rec.sources
    windows = await until(lambda: list(gw.telemetry.recent), what="a closed window")
    w = windows[0]
    assert (w.key.model_id, w.key.model_version, w.inferences, w.errors) == ("detector", "1.0.0", 100, 1)
    assert w.class_counts == {"person": 90, "forklift": 10}


async def test_wrong_or_missing_credentials_are_refused(gw: Gateway) -> None:
    assert await pub(gw, "cam-1", "not-the-token", "devices/cam-1/metrics", "{}") != 0
    cmd = [
        need("mosquitto_pub"),
        "-h",
        "127.0.0.1",
        "-p",
        str(mqtt_port(gw)),
        "-q",
        "1",
        "-t",
        "devices/x/metrics",
        "-m",
        "{}",
    ]
    anonymous = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert await asyncio.wait_for(anonymous.wait(), 20) != 0
    assert gw.broker is not None and gw.broker.stats()["refused"] >= 2 and gw.stats["telemetry.samples"] == 0


async def test_the_gateway_tells_a_connected_device_about_updates(gw: Gateway) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    subscribed = asyncio.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cam-2")
    client.username_pw_set("cam-2", TOKENS["cam-2"])
    client.on_connect = lambda c, *_: c.subscribe("devices/cam-2/updates", 1)
    client.on_subscribe = lambda *_: loop.call_soon_threadsafe(subscribed.set)
    client.on_message = lambda _c, _u, msg: loop.call_soon_threadsafe(got.put_nowait, msg.payload)
    client.connect("127.0.0.1", mqtt_port(gw))
    client.loop_start()
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        assert gw.broker is not None and gw.broker.connected("cam-2")
        await gw.broker.publish("devices/cam-2/updates", b'{"rollback": true}')
        assert await asyncio.wait_for(got.get(), 10) == b'{"rollback": true}'
    finally:  # paho's blocking stop in a thread: the broker runs on this loop
        await asyncio.to_thread(client.disconnect)
        await asyncio.to_thread(client.loop_stop)


async def test_invalid_metrics_are_counted_and_dropped_and_http_metrics_work(gw: Gateway) -> None:
    assert (
        await pub(
            gw,
            "cam-1",
            TOKENS["cam-1"],
            "devices/cam-1/metrics",
            '{"model_version": "1.0.0", "cpu_percent": "hot"}',
        )
        == 0
    )
    assert gw.stats["telemetry.samples"] == 0
    assert (
        "cpu_percent" in gw.stats.last_error["telemetry.invalid"]
        and "cam-1" in gw.stats.last_error["telemetry.invalid"]
    )
    import aiohttp

    from tests.gw import base_url

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKENS['cam-1']}"}) as s:
        async with s.post(f"{base_url(gw)}/devices/cam-1/metrics", json=METRICS) as r:
            assert r.status == 200
        async with s.post(f"{base_url(gw)}/devices/cam-1/metrics", json={**METRICS, "unknown_rate": 3}) as r:
            assert r.status == 400 and "unknown_rate" in await r.text()
    assert gw.stats["telemetry.samples"] == 1
