"""The drift story end to end, every part a real process: an ``ota-gateway serve`` process, six
reference agents (``python -m gateway.agent --simulate``) that install the model and send their
metrics with drift sketches over MQTT, the cloud's ingest. At a random instant the simulated input
of a third of the agents moves (``--drift-shift 3 --drift-shift-at``); out come ``drift`` records
and one ``drift_alert`` at the ingest, the alert on ``/status`` and the distance on ``/metrics``.

Time is squeezed (2-second windows, an 8-second "day") so a real run takes seconds; the
statistic and its defaults are tested on simulated weeks in ``tests/core/test_drift_alert.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.drift_sketch import DriftSketch
from tests.conftest import Registry
from tests.gw import until
from tests.peers import ROOT, IngestServer, free_port, gateway_process, ingest_batch, stop, wait_port

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)


class Ingest(IngestServer):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.records: list[tuple[float, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        self.records.extend((now, r) for r in (await ingest_batch(request))["records"])
        return web.Response(status=204)

    def kind(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, r["body"]) for t, r in self.records if r["kind"] == kind]


def _reference(rng: random.Random) -> dict[str, Any]:
    """The training profile of the agent's simulated features (z ~ N(0, 1) per frame)."""
    zs = [rng.gauss(0.0, 1.0) for _ in range(20_000)]
    return {
        "brightness": DriftSketch().extend(min(255.0, max(0.0, 120 + 25 * z)) for z in zs).to_json(),
        "pc1": DriftSketch().extend(zs).to_json(),
    }


def _agents(
    reg: Registry, tmp_path: Path, http: int, mqtt: int, shift_in: float
) -> list[subprocess.Popen[bytes]]:
    """Six reference agents; the first two's input moves 3 standard deviations ``shift_in`` s on."""
    out = []
    for i in range(6):
        extra = ["--drift-shift", "3", "--drift-shift-at", f"{shift_in:.2f}"] if i < 2 else []
        cmd = [sys.executable, "-m", "gateway.agent", "--service-url", f"http://127.0.0.1:{http}",
               "--id", f"cam-{i}", "--public-key", str(reg.public_key), "--state", str(tmp_path / f"s{i}"),
               "--mqtt", f"127.0.0.1:{mqtt}", "--model-id", "detector", "--poll-interval", "1",
               "--simulate", "--metrics-interval", "0.5", *extra]  # fmt: skip
        with (tmp_path / "logs" / f"cam-{i}.err").open("wb") as err:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            out.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
    return out


DRIFT_ENV = {
    "OTA_GATEWAY_GATES__FIRST_VERSION": '"open"',
    "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1.0",
    "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "1.0",
    "OTA_GATEWAY_DRIFT__WINDOW_S": "2.0",
    "OTA_GATEWAY_DRIFT__SLOT_S": "2.0",
    "OTA_GATEWAY_DRIFT__DAY_S": "8.0",
    "OTA_GATEWAY_DRIFT__PAST_DAYS": "1",
    "OTA_GATEWAY_DRIFT__MIN_COUNT": "150",
    "OTA_GATEWAY_DRIFT__ALERT_AT": "0.25",
    "OTA_GATEWAY_DRIFT__ALERT_WINDOWS": "2",
    "OTA_GATEWAY_DRIFT__ALERT_ON_REFERENCE": "true",
}


async def test_a_third_of_the_agents_shifting_alerts_through_mqtt(reg: Registry, tmp_path: Path) -> None:
    rng = random.Random(26)
    reg.publish(b"model-bytes" * 100, extra={"drift_reference": _reference(rng)})
    ingest = Ingest(free_port())
    await ingest.start()
    http, op, mqtt = free_port(), free_port(), free_port()
    args = ["--data", str(tmp_path / "data"), "--upstream", str(reg.root), "--http", f"127.0.0.1:{http}",
            "--operator", f"127.0.0.1:{op}", "--mqtt", f"127.0.0.1:{mqtt}", "--trusted-key", str(reg.public_key),
            "--site", "test-site"]  # fmt: skip
    env = {**DRIFT_ENV, "OTA_GATEWAY_UPLINK__INGEST_URL": f'"http://127.0.0.1:{ingest.port}/ingest"'}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    shift_in = rng.uniform(12.0, 18.0)  # seconds after the agents start
    try:
        with (logs / "gateway.err").open("wb") as err:
            procs.append(gateway_process(args, env=env, stderr=err, stdout=subprocess.DEVNULL))
        await asyncio.to_thread(wait_port, http, 20)
        started = time.monotonic()
        procs += await asyncio.to_thread(_agents, reg, tmp_path, http, mqtt, shift_in)
        shift_at = started + shift_in
        await until(lambda: ingest.kind("drift_alert"), timeout_s=60, what="a drift alert at the ingest")
        alert_t, alert = ingest.kind("drift_alert")[0]
        before = [b for t, b in ingest.kind("drift") if t < shift_at - 2 and b["psi_reference"] is not None]
        assert alert["event"] == "drift_alert" and alert_t > shift_at, "alerted before the shift"
        assert before, "no judged window before the shift"
        assert max(b["psi_reference"] for b in before) < 0.25
        over = [t for t, b in ingest.kind("drift") if t > shift_at and (b["psi_reference"] or 0) >= 0.25]
        print(
            f"first drift record over 0.25 {over[0] - shift_at:.1f} s after the shift; drift alert"
            f" {alert_t - shift_at:.1f} s after ({alert['feature']}, PSI {alert['psi']:.2f})"
        )

        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{op}/status") as r:
                status = await r.json()
            async with s.get(f"http://127.0.0.1:{op}/metrics") as r:
                text = await r.text()
        assert status["drift"]["alerting"], status["drift"]
        assert status["counters"].get("telemetry.samples", 0) > 0
        # the metrics came over MQTT: six devices connected, their messages published to the ingest
        assert status["mqtt"]["connections"] >= 6 and status["mqtt"]["published"] >= 20, status["mqtt"]
        assert 'ota_gateway_drift_alerting{feature="' in text and "} 1.0" in text
        assert 'ota_gateway_drift_psi{against="reference"' in text
    finally:
        for p in procs:
            await asyncio.to_thread(stop, p)
        await ingest.stop()
