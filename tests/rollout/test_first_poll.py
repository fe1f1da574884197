"""A wave with a free place admits the next eligible device when it asks: the first device at a new
site gets its first model on its first poll (issue 23, finding 9: it used to wait a whole soak, 204
waiting_for_wave with Retry-After 300-900 s). Devices arrive and poll at random instants; the index
lands whenever the mirror gets it; no device ever hears waiting_for_wave while its wave has room,
and the wave never admits more than it holds."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running


@pytest.mark.parametrize("seed", range(int(os.environ.get("FIRST_POLL_SEEDS", "3"))))
async def test_the_first_devices_get_a_first_version_on_their_first_poll(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(os.urandom(20_000), version="1.0.0")
    settings = gateway_settings(
        reg, tmp_path / "data", gates={"waves": (1.0, 100.0), "min_devices_per_wave": 2}
    )
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        answers: dict[str, list[tuple[int, str]]] = {}

        async def poll(dev: str) -> tuple[int, str]:
            q = {"model_id": "detector", "hw": "rev2"}
            async with http.get(f"{base}/devices/{dev}/updates", params=q) as r:
                return r.status, r.headers.get("X-OTA-Reason", "")

        async def device(dev: str) -> None:
            await asyncio.sleep(rng.uniform(0, 0.5))  # it is switched on at any instant
            mine = answers.setdefault(dev, [])
            for _ in range(200):
                mine.append(await poll(dev))
                if mine[-1][0] == 200 or mine[-1][1] == "waiting_for_wave":
                    return
                await asyncio.sleep(rng.uniform(0.01, 0.05))

        # two devices, one after the other: each is the next to ask while wave 1 has a place
        await device("cam-1")
        await device("cam-2")
        await device("cam-3")  # wave 1 holds two (1 % of three, at least two): this one waits
        for dev in ("cam-1", "cam-2"):
            assert answers[dev][-1][0] == 200, f"{dev}: {answers[dev][-3:]}"
            assert all(reason != "waiting_for_wave" for _, reason in answers[dev])
        assert answers["cam-3"][-1] == (204, "waiting_for_wave")
