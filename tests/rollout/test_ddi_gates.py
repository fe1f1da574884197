"""A gate story with hawkBit DDI devices only: the real gateway, 20 devices speaking DDI as
suricatta does, each polling on its own jittered period. They run 1.0.0 (their configData says so);
2.0.0 lands at a random instant. Its first wave's nine devices install it: one succeeds, one stalls in
progress, the others fail after download (feedback ``failure``). The candidate halts in that wave
(the share of failed installs is judged at the stated false-halt rate: seven of nine, against a
limit of 20 %, is evidence enough; one of three would not be); the
device that ran it is offered 1.0.0 again (the rollback), the stalled one gets ``cancelAction``,
and no other device of the site is ever offered 2.0.0, checked on every answer. Three seeds."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.ddi_client import DdiDevice
from tests.gw import base_url, gateway_settings, running, until

DEVICES = [f"ddi-{i}" for i in range(20)]
ROLES = ("success", "stall", "fail")  # by the order in which wave 1's devices are first offered 2.0.0
WAVE_1 = 9


@pytest.mark.parametrize("seed", [3, 17, 2028])
async def test_a_candidate_failing_its_first_wave_over_ddi_is_halted_there(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    v1, v2 = os.urandom(20_000), os.urandom(20_000)
    reg.publish(v1, version="1.0.0")
    tokens = {d: f"token-of-{d}" for d in DEVICES}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tmp_path / "tokens.json"), "poll_interval_s": 1.0},
        ddi={"enabled": True},
        telemetry={"window_s": 1.0},
        uplink={"report_interval_s": 1.0},
        gates={"waves": (10.0, 50.0, 100.0), "min_devices_per_wave": WAVE_1, "soak_min_s": 60.0},
    )
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        offered: list[str] = []  # devices ever offered 2.0.0, in order
        role: dict[str, str] = {}
        rolled_back: set[str] = set()
        cancelled: set[str] = set()
        stop = asyncio.Event()

        async def device(dev: str) -> None:
            d = DdiDevice(
                http,
                base,
                dev,
                tokens[dev],
                attrs={"hw": "rev2", "model_id": "detector", "model_version": "1.0.0"},
            )
            drng = random.Random(f"{seed}-{dev}")
            stalled_on = None
            while not stop.is_set():
                links = (await d.poll()).get("_links", {})
                if "cancelAction" in links:
                    status, doc = await d.get_json(links["cancelAction"]["href"])
                    assert status == 200 and doc["cancelAction"]["stopId"] == doc["id"] == stalled_on
                    fb = links["cancelAction"]["href"] + "/feedback"
                    assert (
                        await d.feedback(fb, doc["id"], "closed", "success", "cancellation acknowledged.")
                        == 200
                    )
                    cancelled.add(dev)
                    stalled_on = None
                elif "deploymentBase" in links:
                    status, doc = await d.get_json(links["deploymentBase"]["href"])
                    if status == 404 and stalled_on is not None:
                        continue  # halted between its poll and this request: the next poll cancels it
                    assert status == 200, doc
                    action, version = doc["id"], doc["deployment"]["chunks"][0]["version"]
                    fb = links["deploymentBase"]["href"] + "/feedback"
                    if version == "2.0.0" and dev not in role:
                        offered.append(dev)
                        role[dev] = ROLES[min(len(role), 2)]
                    if action == stalled_on:
                        pass  # still installing
                    elif version == "1.0.0":  # only ever as the rollback here: 1.0.0 is what they run
                        assert await d.download(doc) == v1
                        assert await d.feedback(fb, action, "proceeding", "none") == 200
                        assert await d.feedback(fb, action, "closed", "success", "Update Installed.") == 200
                        d.attrs["model_version"] = "1.0.0"  # what it reports when asked: what it runs
                        rolled_back.add(dev)
                    else:
                        assert version == "2.0.0" and await d.download(doc) == v2
                        assert await d.feedback(fb, action, "proceeding", "none", "Installing Update.") == 200
                        if role[dev] == "success":
                            assert (
                                await d.feedback(fb, action, "closed", "success", "Update Installed.") == 200
                            )
                            d.attrs["model_version"] = "2.0.0"
                        elif role[dev] == "fail":
                            assert await d.feedback(fb, action, "closed", "failure", "ERROR : rawfile") == 200
                        else:
                            stalled_on = action
                await asyncio.sleep(drng.uniform(0.05, 0.3))  # the device's own period

        tasks = [asyncio.create_task(device(dev)) for dev in DEVICES]
        try:
            await asyncio.sleep(rng.uniform(0.0, 1.5))  # the index lands mid-polling
            reg.publish(v2, version="2.0.0")
            await until(
                lambda: rolled_back and cancelled,
                timeout_s=60,
                what="the wave's devices: one rolled back, one cancelled",
            )
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        by_role = {r: d for d, r in role.items()}
        assert 3 <= len(offered) <= WAVE_1  # wave 1 only: 10% of 20, at least min_devices_per_wave
        assert rolled_back == {by_role["success"]}  # the device that ran 2.0.0 is offered 1.0.0 again
        assert cancelled == {by_role["stall"]}  # the one with it in progress is told to stop
        async with http.get(f"http://{gw.operator_addresses[0][0]}:{gw.operator_addresses[0][1]}/gates") as r:
            gates = await r.json()
        (gate,) = [g for g in gates["gates"] if g["deployment"] == "detector@2.0.0"]
        assert gate["stage"] == "halted"
        halt = gate["last_decision"]
        assert halt["action"] == "halt" and halt["wave"] == 0
        assert any(v["criterion"] == "install_failures" and v["result"] == "worse" for v in halt["verdicts"])
        for dev in DEVICES:  # the rest of the site is never offered it
            d = DdiDevice(http, base, dev, tokens[dev])
            async with http.get(d.controller, headers=d.headers) as r:
                doc = await r.json()
                assert "deploymentBase" not in doc.get("_links", {}) and "cancelAction" not in doc.get(
                    "_links", {}
                )
                if dev not in offered:
                    assert r.headers["X-OTA-Reason"] == "halted_at_site"
