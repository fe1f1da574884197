"""The site's trace survives the process: a real ``ota-gateway serve`` killed (-9) at a random
instant while devices post metrics at random instants, started again on the same data folder;
``ota-gateway gate trace`` then reads both runs' segments, every device has windows from before the
kill and after the restart (what is lost: the lines still waiting for their batch, at most a couple of
seconds), and no window of a device is written twice. A batch cut short on disk (a power cut, which
a kill does not cause) is tested in ``test_trace_log.py``."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.peers import ROOT, gateway_process, stop, wait_port
from tests.rollout.test_replay_live import site_config

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)

DEVICES = {"cam-0": "1.0.0", "cam-1": "1.0.0", "cam-2": "2.0.0", "cam-3": "2.0.0"}


async def _post(base: str, rng: random.Random, until: float) -> None:
    async with aiohttp.ClientSession() as http:

        async def device(dev: str, version: str) -> None:
            while time.monotonic() < until:
                body = {"model_id": "detector", "model_version": version, "num_inferences": 100,
                        "num_errors": 0, "cpu_percent": rng.uniform(20, 40), "ram_percent": 40.0}  # fmt: skip
                try:
                    async with http.post(f"{base}/devices/{dev}/metrics", json=body) as r:
                        await r.read()
                except aiohttp.ClientError:
                    pass  # killed: the device tries again later
                await asyncio.sleep(rng.uniform(0.05, 0.3))

        await asyncio.gather(*(device(d, v) for d, v in DEVICES.items()))


def _trace(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["gate", "trace", "--config", str(config), "--since", "1h", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize("seed", range(2))
async def test_a_kill_mid_write_loses_only_the_last_moments(reg: Registry, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    reg.publish(os.urandom(10_000), version="1.0.0")
    config, http_port, _ = site_config(reg, tmp_path / "data")
    base = f"http://127.0.0.1:{http_port}"
    proc = gateway_process(["--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(http_port, 20)
        await _post(base, rng, time.monotonic() + rng.uniform(4.0, 7.0))
        proc.kill()  # -9, whatever it was writing
        proc.wait()
        killed_at = time.time()
        proc = gateway_process(
            ["--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(http_port, 20)
        restarted_at = time.time()
        await _post(base, rng, time.monotonic() + 5.0)
    finally:
        stop(proc)
    segments = sorted(p.name for p in (tmp_path / "data" / "traces").iterdir())
    assert len({name.split("-")[1] for name in segments}) == 2, segments  # one set per run

    out = tmp_path / "site.jsonl"
    r = _trace(config, out)
    assert r.returncode == 0, r.stderr
    head, *records = [json.loads(x) for x in out.read_text().splitlines()]
    assert (head["baseline"], head["candidate"]) == ("1.0.0", "2.0.0")
    metrics = [x for x in records if "metrics" in x]
    for dev, version in DEVICES.items():
        times = [head["start"] + x["t"] for x in metrics if x["device"] == dev]
        assert all(x["version"] == version for x in metrics if x["device"] == dev)
        assert min(times) < killed_at - 2 and max(times) > restarted_at + 1, (dev, times, killed_at)
    twice = [k for k, n in Counter((x["device"], x["t"]) for x in metrics).items() if n > 1]
    assert not twice
