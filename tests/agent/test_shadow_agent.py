"""The shadow story live: a real ``ota-gateway serve`` process, reference agents running the
candidate in shadow beside their active model, and the dashboard's JSON read over HTTP.

A candidate that swaps two classes on 5 % of the frames (same latency, CPU and class shares) is
halted in the shadow stage: no device ever switches to it, and the gate's panel shows the agreement
per class and the swapped pair on top. A good candidate (about 99 % agreement) leaves shadow for
wave 1 (the devices then switch as usual).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.agent.agent import DeviceAgent
from gateway.agent.simulate import Profile, SimulatedInference
from tests.agent.test_agent import FAST, HEALTH, gateway, operator
from tests.conftest import Registry
from tests.gw import until

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)

SHADOW = {
    **FAST,
    "OTA_GATEWAY_GATES__FIRST_VERSION": "open",
    "OTA_GATEWAY_GATES__SHADOW": "true",
    "OTA_GATEWAY_GATES__SOAK_MIN_S": "5",
    "OTA_GATEWAY_GATES__MIN_SAMPLES": "5",
}
BUSY = Profile(inferences_per_s=200.0)  # frames enough per one-second window
SWAPS = Profile(inferences_per_s=200.0, swap=("person", "forklift", 0.05))
GOOD = Profile(inferences_per_s=200.0, disagree=0.01)


def agents(gw: Any, reg: Registry, tmp_path: Path, candidate: Profile, seed: int) -> list[DeviceAgent]:
    out = []
    for i in range(2):  # wave 1 of a small site: two devices, both in shadow
        sim = SimulatedInference(
            {"2.0.0": candidate}, interval_s=0.3, rng=random.Random(seed + i), default=BUSY
        )
        out.append(
            DeviceAgent(
                gw.url,
                f"cam-{i}",
                reg.public_key.read_bytes(),
                tmp_path / f"cam-{i}",
                attrs={"hw": "rev2"},
                model_id="detector",
                wait_s=2,
                metrics_interval_s=0.3,
                mqtt=gw.mqtt,
                metrics_source=sim,
                shadow_source=sim.shadow,
            )
        )
    return out


async def gate(gw: Any) -> dict[str, Any] | None:
    gates = (await operator(gw, "/gates"))["gates"]
    return next((g for g in gates if g["deployment"] == "detector@2.0.0"), None)


async def baseline_windows(gw: Any, n: int) -> None:
    """Until the dashboard's chart of 1.0.0 has ``n`` closed windows (a deadline of 60 s)."""
    for _ in range(600):
        async with aiohttp.ClientSession() as s, s.get(f"http://{gw.operator}/dashboard/state") as r:
            doc = await r.json()
        charts = next((v["charts"] for v in doc["versions"] if v["name"] == "detector@1.0.0"), [])
        points = [int(m) for c in charts for m in re.findall(r'data-points="(\d+)"', c["svg"])]
        if points and max(points) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {n} windows of 1.0.0 in a minute")


async def story(
    reg: Registry, tmp_path: Path, candidate: Profile, done: Any
) -> tuple[Any, list[DeviceAgent]]:
    reg.publish(os.urandom(50_000), version="1.0.0", health=HEALTH)
    with gateway(reg, tmp_path / "data", SHADOW) as gw:
        fleet = agents(gw, reg, tmp_path, candidate, 7)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(a.run(stop)) for a in fleet]
        try:
            await until(lambda: all("healthy" in a.events for a in fleet), timeout_s=30, what="1.0.0 running")
            await baseline_windows(gw, 6)  # the devices' own levels on 1.0.0 (classes to judge)
            reg.publish(os.urandom(50_000), version="2.0.0", health=HEALTH)
            await until(lambda: all(a.shadowing is not None for a in fleet), timeout_s=30, what="in shadow")
            g: dict[str, Any] | None = None
            for _ in range(900):  # polling a condition with a deadline (90 s)
                g = await gate(gw)
                if g is not None and done(g):
                    break
                await asyncio.sleep(0.1)
            assert g is not None and done(g), g
            async with aiohttp.ClientSession() as s, s.get(f"http://{gw.operator}/dashboard/state") as r:
                assert r.status == 200
                dash = await r.json()
            async with aiohttp.ClientSession() as s, s.get(f"http://{gw.operator}/dashboard/app.js") as r:
                script = await r.text()
            async with aiohttp.ClientSession() as s, s.get(f"http://{gw.operator}/metrics") as r:
                assert r.status == 200
                scraped = {
                    (x.name, tuple(sorted(x.labels.items()))): x.value
                    for fam in text_string_to_metric_families(await r.text())
                    for x in fam.samples
                }
            # a device's bad agreement is refused with the field named, never a 500
            bad = {"model_version": "2.0.0", "shadow": True, "agreement": {"frames": 5, "agree": 9}}
            async with aiohttp.ClientSession() as s, s.post(f"{gw.url}/devices/cam-0/metrics", json=bad) as r:
                assert (
                    r.status == 400 and "agreement.agree (9) exceeds agreement.frames (5)" in await r.text()
                )
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    panel = next(p for p in dash["gates"] if p["deployment"] == "detector@2.0.0")
    return (g, panel, script, scraped), fleet


async def test_a_swapping_candidate_is_halted_in_shadow_and_no_device_switches(
    reg: Registry, tmp_path: Path
) -> None:
    (g, panel, script, scraped), fleet = await story(reg, tmp_path, SWAPS, lambda g: g["stage"] != "shadow")
    assert g["stage"] == "halted", g
    halt = g["last_decision"]
    assert halt["action"] == "halt" and "shadow_agreement" in halt["reason"], halt
    for a in fleet:
        current = await a.running()
        assert current is not None and current.version == "1.0.0"
        # 1.0.0 installed; 2.0.0 only downloaded and verified into the other slot, never activated
        assert a.events == ["downloaded", "verified", "activated", "healthy", "downloaded", "verified"]
    a = panel["agreement"]
    assert a is not None and a["below"] and float(a["overall"].removesuffix(" %")) < 97
    assert {c["class"] for c in a["classes"]} >= {"person", "forklift"}
    assert {p["pair"] for p in a["pairs"][:2]} == {"person → forklift", "forklift → person"}
    assert "Shadow agreement" in script and "g-agreement" in script
    dep = ("deployment", "detector@2.0.0")
    assert scraped[("ota_gateway_gate_shadow_agreement", (dep,))] < 0.97
    assert scraped[("ota_gateway_gate_shadow_frames_total", (dep,))] > 0
    assert ("ota_gateway_gate_shadow_class_agreement", (("class", "forklift"), dep)) in scraped
    assert scraped[("ota_gateway_gate_shadow_confusions_total", (dep, ("pair", "person->forklift")))] > 0


async def test_a_good_candidate_leaves_shadow_for_wave_1(reg: Registry, tmp_path: Path) -> None:
    (g, panel, _script, _scraped), _fleet = await story(reg, tmp_path, GOOD, lambda g: g["stage"] != "shadow")
    assert g["stage"] in ("waves", "done"), g
    advance = next(e for e in panel["timeline"] if e["action"] in ("advance", "done"))
    assert advance["reason"].startswith("shadow stage passed"), advance
    agreement = next(v for v in advance["verdicts"] if v["criterion"] == "shadow agreement")
    assert agreement["result"] == "no_worse" and agreement["words"].startswith("agreement 9"), agreement
    assert panel["agreement"] is not None and not panel["agreement"]["below"]
