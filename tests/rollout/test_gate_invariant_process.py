"""The canary gate's promise through the real process, acting like a site: a real ``ota-gateway
serve`` behind a real registry folder, 200 devices that poll from before anything is published (on
jittered intervals, half of them holding long polls), and, at random instants, the candidate's
index landing, the gateway killed (-9) and restarted mid-wave, an operator hold and release, a
coordinator ``paused``, an operator abort. Nothing waits for the gateway's state before acting.

Checked on every answer, from outside: the distinct devices ever offered the candidate never exceed
what the first wave admits (the soak is long, so only wave 0 is ever open); after an abort was
acknowledged, or after any device was told the candidate halted, no new device is offered it.

``GATE_PROCESS_SCHEDULES`` sets the number of schedules (``.ci/run`` runs more as a further step).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import registry
from gateway.core.settings import GateSettings
from tests.conftest import Registry
from tests.peers import free_port, gateway_process, serve_args, wait_port

SCHEDULES = int(os.environ.get("GATE_PROCESS_SCHEDULES", "1"))
DEVICES = 200
SITE = GateSettings()  # the defaults: waves 1/5/10/25/50/100 %, 1 device minimum, soak 900 s
FIRST_WAVE = max(math.ceil(SITE.waves[0] * DEVICES / 100), SITE.min_devices_per_wave)
ENV = {  # fast windows and gate steps; the gates' own settings stay the defaults
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3",
    "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1.0",
    "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "1.0",
    "OTA_GATEWAY_GATES__MIN_SAMPLES": "4",
}
HEALTH = {"max_cpu_percent": 80, "warmup_inferences": 10}


@dataclass
class Watch:
    """What the devices were told, and the invariant's verdicts."""

    exposed: set[str] = field(default_factory=set)
    stop_seen_at: float | None = None  # an abort acknowledged, or a device told it halted
    released_after_stop: bool = False
    answers: int = 0
    violations: list[str] = field(default_factory=list)

    def offered(self, device: str, asked_at: float) -> None:
        new = device not in self.exposed
        self.exposed.add(device)
        if len(self.exposed) > FIRST_WAVE:
            self.violations.append(
                f"{len(self.exposed)} devices offered the candidate; wave 0 admits {FIRST_WAVE}"
            )
        stopped = self.stop_seen_at is not None and asked_at > self.stop_seen_at
        if new and stopped and not self.released_after_stop:
            self.violations.append(f"{device} newly offered the candidate after it was stopped")

    def stopped(self) -> None:
        if self.stop_seen_at is None:
            self.stop_seen_at = time.monotonic()


class Gateway:
    """One gateway's command line, killed and started again on the same ports and data."""

    def __init__(self, reg: Registry, data: Path) -> None:
        self.http_port, self.operator_port = free_port(), free_port()
        self.args = serve_args(data, str(reg.root), self.http_port, site=reg.site, trusted_key=reg.public_key)
        i = self.args.index("--operator")
        self.args[i + 1] = f"127.0.0.1:{self.operator_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = gateway_process(self.args, env=ENV, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_port(self.http_port, 20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def device(
    http: aiohttp.ClientSession, base: str, name: str, rng: random.Random, watch: Watch, end: float
) -> None:
    version, long_poll = "1.0.0", rng.random() < 0.5
    while time.monotonic() < end:
        q = {"model_id": "detector", "model_version": version, "hw": "rev2"}
        if long_poll:
            q["wait"] = "2"
        asked_at = time.monotonic()
        try:
            async with http.get(f"{base}/devices/{name}/updates", params=q) as r:
                status, reason = r.status, r.headers.get("X-OTA-Reason", "")
                body: dict[str, Any] | None = await r.json() if status == 200 else None
            watch.answers += 1
            if reason in ("halted_at_site", "rollback", "rollback_previous_slot"):
                watch.stopped()
            if body is not None and body["version"] == "2.0.0" and not body.get("rollback"):
                watch.offered(name, asked_at)
            if body is not None:
                version = body["version"]
                await http.post(
                    f"{base}/devices/{name}/events",
                    json={"event": "activated", "model_id": "detector", "version": version},
                )
            if version == "2.0.0":  # the candidate burns the CPU
                metrics = {"model_id": "detector", "model_version": version, "num_inferences": 50,
                           "num_errors": 0, "avg_latency_ms": 40.0, "cpu_percent": 95.0, "ram_percent": 40.0}  # fmt: skip
                await http.post(f"{base}/devices/{name}/metrics", json=metrics)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass  # the gateway is restarting: try again on the next poll
        await asyncio.sleep(rng.uniform(0.2, 0.8))  # the device's own jittered poll interval


async def operator(gw: Gateway, action: str, watch: Watch) -> None:
    url = f"http://127.0.0.1:{gw.operator_port}/gates/detector@2.0.0/{action}"
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, json={"who": "test", "why": "random schedule"}) as r,
        ):
            if r.status == 200 and action == "abort":
                watch.stopped()
            if r.status == 200 and action == "release" and watch.stop_seen_at is not None:
                watch.released_after_stop = True
    except aiohttp.ClientError:
        pass  # restarting: the control did not happen


async def one_schedule(seed: int, reg: Registry, data: Path) -> Watch:
    rng = random.Random(seed)
    reg.publish(os.urandom(20_000), version="1.0.0", health=HEALTH)
    gw = Gateway(reg, data)
    gw.start()
    watch = Watch()
    t0 = time.monotonic()
    land = rng.uniform(0.5, 2.5)
    end = t0 + land + 9.0
    base = f"http://127.0.0.1:{gw.http_port}"
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=400)) as http:
            devices = [
                asyncio.create_task(
                    device(http, base, f"cam-{i:03d}", random.Random(seed * 1000 + i), watch, end)
                )
                for i in range(DEVICES)
            ]
            plan: list[tuple[float, str]] = [(land, "land")]
            if rng.random() < 0.7:
                plan.append((land + rng.uniform(0.0, 4.0), "restart"))
            if rng.random() < 0.3:
                t = land + rng.uniform(0.0, 4.0)
                plan += [(t, "hold"), (t + rng.uniform(0.5, 3.0), "release")]
            if rng.random() < 0.3:
                t = land + rng.uniform(0.0, 4.0)
                plan += [(t, "pause"), (t + rng.uniform(0.5, 3.0), "unpause")]
            if rng.random() < 0.3:
                plan.append((land + rng.uniform(0.5, 6.0), "abort"))
            for at, what in sorted(plan):
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))  # the schedule's own clock
                if what == "land":
                    await asyncio.to_thread(reg.publish, os.urandom(20_000), version="2.0.0", health=HEALTH)
                elif what == "restart":
                    gw.kill()
                    await asyncio.to_thread(gw.start)
                elif what in ("pause", "unpause"):
                    command = "paused" if what == "pause" else None
                    await asyncio.to_thread(
                        registry.set_command,
                        reg.root,
                        reg.private_key,
                        "detector@2.0.0",
                        command,
                        site=reg.site,
                    )
                else:
                    await operator(gw, what, watch)
            await asyncio.gather(*devices)
    finally:
        gw.kill()
    return watch


@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_the_candidate_never_reaches_more_than_its_open_wave(
    seed: int, make_registry: Any, tmp_path: Path
) -> None:
    reg = make_registry()
    watch = await one_schedule(seed, reg, tmp_path / "data")
    print(f"seed {seed}: {watch.answers} answers, {len(watch.exposed)} devices offered the candidate")
    assert watch.answers > DEVICES  # the devices really polled
    assert not watch.violations, watch.violations[:5]
