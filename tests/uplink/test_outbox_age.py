"""The outbox's age bound, as an operator sees it: with the cloud unreachable, devices report at
random instants and no record waits longer than ``uplink.outbox_max_age_s`` (plus one expiry pass);
the older ones are dropped and counted by reason on ``/metrics``.

Before this test the bound was enforced by nothing but a unit test's direct call: the oldest record's
age grew without limit during an outage (``outbox_oldest_age_seconds`` passed any ``max_age_s``).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running
from tests.ops.test_metrics import METRICS, TOKEN, families, scrape
from tests.peers import free_port

MAX_AGE_S = 2.0
PASS_S = 1.0  # an expiry pass every tenth of max_age_s, at least every second
SLACK_S = 1.5  # a loaded box: the pass's thread and the scrape themselves take time


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
async def test_no_record_waits_past_the_age_bound_and_the_dropped_ones_are_counted(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    dead = f"http://127.0.0.1:{free_port()}/ingest"  # nothing listens: every record waits
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        operator={"listen": "127.0.0.1:0", "token": TOKEN},
        uplink={"ingest_url": dead, "outbox_max_age_s": MAX_AGE_S},
        telemetry={"window_s": 0.5},
    )
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        worst = 0.0
        end = asyncio.get_running_loop().time() + 3 * MAX_AGE_S
        while asyncio.get_running_loop().time() < end:
            for _ in range(rnd.randint(1, 4)):
                device = f"cam-{rnd.randint(1, 5)}"
                async with http.post(f"{base_url(gw)}/devices/{device}/metrics", json=METRICS) as r:
                    assert r.status == 200
            status, _, text = await scrape(gw)
            assert status == 200
            worst = max(worst, families(text)["ota_gateway_outbox_oldest_age_seconds"][()])
            await asyncio.sleep(rnd.uniform(0.0, 0.6))
        f = families((await scrape(gw))[2])
    assert worst <= MAX_AGE_S + PASS_S + SLACK_S, f"a record waited {worst:.1f} s"
    dropped = {labels: n for labels, n in f["ota_gateway_outbox_drops"].items()}
    assert sum(n for labels, n in dropped.items() if ("reason", "older than max_age_s") in labels) > 0
