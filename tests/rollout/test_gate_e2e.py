"""End to end: the real gateway, its real broker, and simulated devices publishing real MQTT metrics.
A candidate that doubles CPU halts in its first wave; the wave's devices are told over MQTT to roll
back, their next poll offers the previous stable version, and its artifact is served to them."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho

from gateway.core.waves import first_wave_most
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until

TOKEN = "site-token-for-tests"
DEVICES = [f"cam-{i}" for i in range(10)]


def metrics(version: str, cpu: float) -> bytes:
    return json.dumps(
        {"model_id": "detector", "model_version": version, "num_inferences": 200, "num_errors": 1,
         "avg_latency_ms": 40.0, "cpu_percent": cpu, "ram_percent": 40.0, "class_counts": {"person": 200}}
    ).encode()  # fmt: skip


async def test_a_bad_candidate_halts_in_wave_0_and_its_devices_roll_back(
    reg: Registry, tmp_path: Path
) -> None:
    v1, v2 = os.urandom(30_000), os.urandom(30_000)
    reg.publish(v1, version="1.0.0")
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "site_token": TOKEN},
        telemetry={"window_s": 1.0},
        uplink={"report_interval_s": 1.0},
        gates={
            "waves": (10.0, 50.0, 100.0),
            "min_devices_per_wave": 2,
            "soak_min_s": 30.0,
            "min_samples": 4,
        },
    )
    async with (
        running(settings) as gw,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):
        base = base_url(gw)
        version = dict.fromkeys(DEVICES, "1.0.0")

        async def poll(dev: str) -> tuple[int, dict[str, object] | None, str]:
            q = {"model_id": "detector", "model_version": version[dev], "hw": "rev2"}
            async with http.get(f"{base}/devices/{dev}/updates", params=q) as r:
                return (
                    r.status,
                    (await r.json() if r.status == 200 else None),
                    r.headers.get("X-OTA-Reason", ""),
                )

        # Every device is connected to the embedded broker and listens for updates.
        loop = asyncio.get_running_loop()
        told: dict[str, list[dict[str, object]]] = {d: [] for d in DEVICES}
        ready = asyncio.Event()
        subscribed: set[str] = set()
        clients = []
        assert gw.broker is not None
        for dev in DEVICES:
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=dev)
            c.username_pw_set(dev, TOKEN)
            c.on_connect = lambda cl, _u, _f, _rc, _p, d=dev: cl.subscribe(f"devices/{d}/updates", 1)

            def on_sub(_c: object, _u: object, _m: object, _rc: object, _p: object, d: str = dev) -> None:
                subscribed.add(d)
                if len(subscribed) == len(DEVICES):
                    loop.call_soon_threadsafe(ready.set)

            c.on_subscribe = on_sub
            c.on_message = lambda _c, _u, m, d=dev: loop.call_soon_threadsafe(
                told[d].append, json.loads(m.payload)
            )
            c.connect("127.0.0.1", gw.broker.addresses["tcp"][1])
            c.loop_start()
            clients.append(c)
        try:
            await asyncio.wait_for(ready.wait(), 15)
            by_name = dict(zip(DEVICES, clients, strict=True))
            offered: set[str] = set()  # ever offered the candidate
            rolled_back: set[str] = set()  # offered 1.0.0 again, and downloaded it
            stop = asyncio.Event()

            async def device(dev: str) -> None:
                """Polls, installs what it is offered, reports, on its own jittered period: it never
                waits for the gateway's state."""
                rng = random.Random(dev)
                while not stop.is_set():
                    status, manifest, _ = await poll(dev)
                    if status == 200 and manifest is not None and manifest.get("rollback"):
                        assert manifest["version"] == "1.0.0"
                        async with http.get(str(manifest["artifact_url"])) as r:
                            assert r.status == 200 and await r.read() == v1
                        version[dev] = "1.0.0"
                        rolled_back.add(dev)
                    elif status == 200 and manifest is not None:
                        assert manifest["version"] == "2.0.0"
                        offered.add(dev)
                        version[dev] = "2.0.0"
                        body = {"event": "activated", "model_id": "detector", "version": "2.0.0"}
                        async with http.post(f"{base}/devices/{dev}/events", json=body) as r:
                            assert r.status == 200
                    cpu = 70.0 if version[dev] == "2.0.0" else 30.0  # the candidate doubles CPU
                    by_name[dev].publish(f"devices/{dev}/metrics", metrics(version[dev], cpu), qos=1)
                    await asyncio.sleep(rng.uniform(0.1, 0.4))  # the device's own period

            tasks = [asyncio.create_task(device(dev)) for dev in DEVICES]
            # the baseline has run a while (each device is compared with its own past); the index lands
            # mid-polling
            await asyncio.sleep(random.uniform(3.0, 5.0))
            reg.publish(v2, version="2.0.0")
            try:
                await until(
                    lambda: offered and offered <= rolled_back and all(told[d] for d in offered),
                    timeout_s=60,
                    what="the wave's devices told over MQTT and rolled back",
                )
            finally:
                stop.set()
                await asyncio.gather(*tasks)

            # the first wave: 10% of 10, at least min_devices_per_wave, grown by its errors up to twice
            # that (gates.first_wave_error_level): never more
            assert len(offered) <= first_wave_most(settings.gates.waves, len(DEVICES), 2)
            assert all(told[d][-1]["rollback"] and told[d][-1]["version"] == "1.0.0" for d in offered)
            assert not any(told[d] for d in DEVICES if d not in offered)
            for dev in DEVICES:
                if dev not in offered:
                    assert (await poll(dev))[2] == "halted_at_site"  # never offered the halted version
            async with aiohttp.ClientSession() as op:
                host, port = gw.operator_addresses[0][:2]
                async with op.get(f"http://{host}:{port}/gates") as r:
                    doc = await r.json()
            halts = [a for a in doc["audit"] if a["action"] == "halt" and a["deployment"] == "detector@2.0.0"]
            assert len(halts) == 1 and "cpu_rise_percent" in halts[0]["reason"] and halts[0]["wave"] == 0
        finally:
            for c in clients:  # paho's blocking stop in a thread: the broker runs on this loop
                await asyncio.to_thread(c.disconnect)
                await asyncio.to_thread(c.loop_stop)
