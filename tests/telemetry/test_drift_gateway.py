"""Drift through a real gateway: devices POST metrics with drift sketches, the manifest carries a
reference profile; out come ``drift`` and ``drift_alert`` records at the cloud's ingest, the alert
on ``/status``, the distance on ``/metrics`` and a chart per feature on the dashboard."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.drift_sketch import DriftSketch
from tests.commands.test_commands import run_cli, write_config
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until
from tests.peers import IngestServer, ingest_batch


class Ingest(IngestServer):
    def __init__(self) -> None:
        super().__init__(0)
        self.records: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.records.extend((await ingest_batch(request))["records"])
        return web.Response(status=204)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.records if r["kind"] == kind]


def _sketch(rng: random.Random, mean: float, n: int) -> dict[str, Any]:
    return DriftSketch().extend(rng.gauss(mean, 1.0) for _ in range(n)).to_json()


async def test_a_shift_in_a_third_of_the_devices_alerts_end_to_end(reg: Registry, tmp_path: Path) -> None:
    rng = random.Random(7)
    reference = {"pc1": _sketch(rng, 0.0, 20_000)}
    reg.publish(b"model-1", extra={"drift_reference": reference})
    ingest = Ingest()
    await ingest.start()
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        gates=OPEN_FIRST,
        telemetry={"window_s": 1.0},
        uplink={"ingest_url": f"http://127.0.0.1:{ingest.port}/ingest", "report_interval_s": 1.0},
        drift={
            "window_s": 1.0,
            "min_count": 200,
            "alert_windows": 2,
            "alert_on_reference": True,
            "day_s": 4.0,
            "slot_s": 1.0,
            "past_days": 1,
        },
    )
    shifted = False
    try:
        async with running(settings) as gw, aiohttp.ClientSession() as http:
            base = base_url(gw)
            host, port = gw.operator_addresses[0][:2]
            op = f"http://{host}:{port}"
            await until(lambda: gw.mirror.index is not None, what="the index")

            async def device(i: int) -> None:
                while True:
                    mean = 3.0 if shifted and i < 2 else 0.0
                    body = {
                        "model_id": "detector",
                        "model_version": "1.0.0",
                        "num_inferences": 60,
                        "drift": {"pc1": _sketch(rng, mean, 60)},
                    }
                    async with http.post(f"{base}/devices/cam-{i}/metrics", json=body) as r:
                        assert r.status in (200, 202, 204), await r.text()
                    await asyncio.sleep(0.1)

            tasks = [asyncio.create_task(device(i)) for i in range(6)]
            try:
                await until(lambda: len(ingest.kind("drift")) >= 3, timeout_s=20, what="drift records")
                assert not ingest.kind("drift_alert"), "an alert on input like the reference"
                stable = [r for r in ingest.kind("drift") if r["psi_reference"] is not None]
                assert stable and max(r["psi_reference"] for r in stable) < 0.1
                shifted = True
                await until(lambda: ingest.kind("drift_alert"), timeout_s=20, what="a drift alert upstream")
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            alert = ingest.kind("drift_alert")[0]
            assert alert["event"] == "drift_alert" and alert["feature"] == "pc1" and alert["psi"] >= 0.1
            rec = ingest.kind("drift")[-1]
            assert rec["site"] == "test-site" and rec["model_id"] == "detector" and rec["count"] > 0

            async with http.get(f"{op}/status") as r:
                status = await r.json()
            assert status["drift"]["alerting"] == ["detector/pc1"]
            async with http.get(f"{op}/metrics") as r:
                text = await r.text()
            assert 'ota_gateway_drift_alerting{feature="pc1",model="detector"} 1.0' in text
            assert 'ota_gateway_drift_psi{against="reference",feature="pc1",model="detector"}' in text
            async with http.get(f"{op}/dashboard/state") as r:
                state = await r.json()
            chart = state["drift"][0]
            assert chart["feature"] == "pc1" and chart["svg"].startswith("<svg") and "ALERT" in chart["title"]
    finally:
        await ingest.stop()


async def test_hostile_drift_is_a_400_and_changes_nothing(reg: Registry, tmp_path: Path) -> None:
    settings = gateway_settings(reg, tmp_path / "data", drift={"max_features": 2})
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        bad = [
            {"pc1": {"pos": {"1": -3}}},
            {"pc1": [1, 2]},
            {"bad name": {}},
            {f"f{i}": {} for i in range(17)},
            {"pc1": {"pos": {str(k): 1 for k in range(60)}}},
        ]
        for drift in bad:
            body = {"model_id": "detector", "model_version": "1.0.0", "drift": drift}
            async with http.post(f"{base}/devices/cam-1/metrics", json=body) as r:
                assert r.status == 400, drift
                assert "drift" in await r.text()
        many = {f"f{i}": {"pos": {"1": 5}} for i in range(16)}  # valid, past the site's cap of 2
        for i in range(5):
            body = {"model_id": "detector", "model_version": "1.0.0", "drift": many}
            async with http.post(f"{base}/devices/cam-{i}/metrics", json=body) as r:
                assert r.status in (200, 202, 204)
        watch = gw.telemetry.drift
        assert watch is not None
        assert len(watch.tracker.keys) == 2 and watch.tracker.ignored > 0


@pytest.mark.parametrize("dry_run", [("input_drift",), ()], ids=["dry-run", "halting"])
async def test_an_alert_during_an_open_gate_is_recorded_dry_run_or_halts(
    reg: Registry, tmp_path: Path, dry_run: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A first version's gate holds wave 1 (a long soak); the input of every device shifts; the
    drift alert reaches the gate as input_drift:pc1 worse: recorded with its evidence and the gate
    still open in dry run (the default), halted with ``dry_run = []``. Read over HTTP ``/gates`` and
    with ``ota-gateway gate status``."""
    rng = random.Random(len(dry_run))
    reg.publish(b"model-1", extra={"drift_reference": {"pc1": _sketch(rng, 0.0, 20_000)}})
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        telemetry={"window_s": 1.0},
        gates={"waves": (1.0, 100.0), "min_devices_per_wave": 2, "soak_min_s": 600.0, "dry_run": dry_run},
        drift={"window_s": 1.0, "min_count": 200, "alert_windows": 2, "alert_on_reference": True},
    )
    shifted = False
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        host, port = gw.operator_addresses[0][:2]
        op = f"http://{host}:{port}"
        await until(lambda: gw.mirror.index is not None, what="the index")
        admitted = []
        for i in range(4):  # wave 1 takes two; the others wait (they report the drift of another version)
            q = {"model_id": "detector", "hw": "rev2"}
            reason = ""
            while reason != "waiting_for_wave":  # until the gate is judged: 204 with another reason
                async with http.get(f"{base}/devices/cam-{i}/updates", params=q) as r:
                    reason = r.headers.get("X-OTA-Reason", "")
                    if r.status == 200:
                        admitted.append(i)
                        break
                await asyncio.sleep(0.05)
        for i in admitted:
            body = {"event": "activated", "model_id": "detector", "version": "1.0.0"}
            async with http.post(f"{base}/devices/cam-{i}/events", json=body) as e:
                assert e.status == 200
        assert len(admitted) == 2

        async def device(i: int) -> None:
            while True:
                body = {
                    "model_id": "detector",
                    "model_version": "1.0.0" if i in admitted else "0.9.0",
                    "num_inferences": 60,
                    "drift": {"pc1": _sketch(rng, 3.0 if shifted else 0.0, 60)},
                }
                async with http.post(f"{base}/devices/cam-{i}/metrics", json=body) as r:
                    assert r.status in (200, 202, 204), await r.text()
                await asyncio.sleep(0.1)

        async def gates() -> dict[str, Any]:
            async with http.get(f"{op}/gates") as r:
                doc: dict[str, Any] = await r.json()
                return doc

        def drift_verdicts(doc: dict[str, Any]) -> list[dict[str, Any]]:
            return [v for d in doc["audit"] for v in d["verdicts"] if v["criterion"] == "input_drift:pc1"]

        tasks = [asyncio.create_task(device(i)) for i in range(4)]
        try:
            await until(
                lambda: gw.telemetry.drift and gw.telemetry.drift.tracker.latest, 20, "a drift window"
            )
            await asyncio.sleep(2.5)  # a few windows judged like the reference: no worse, no decision
            assert not drift_verdicts(await gates())
            shifted = True
            await until(
                lambda: gw.telemetry.drift and gw.telemetry.drift.status()["alerting"], 20, "an alert"
            )
            deadline = asyncio.get_running_loop().time() + 20
            judged = ("observe", "halt")  # the audit is written before the state is published: both
            while not (
                drift_verdicts(doc := await gates()) and doc["gates"][0]["last_decision"]["action"] in judged
            ):
                assert asyncio.get_running_loop().time() < deadline, "no input_drift verdict in the decisions"
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        (gate,) = doc["gates"]
        (v,) = drift_verdicts(doc)
        assert v["result"] == "worse" and v["candidate"] >= 0.1 and v["limit"] == 0.1
        assert v["note"] == "against the manifest's reference"
        if dry_run:
            assert v["dry_run"] and gate["stage"] == "waves" and gate["last_decision"]["action"] == "observe"
            assert "input drift 'pc1' (input_drift:pc1)" in gate["last_decision"]["reason"]
        else:
            assert not v["dry_run"] and gate["stage"] == "halted"
            assert (
                gate["last_decision"]["action"] == "halt"
                and "input_drift:pc1" in gate["last_decision"]["reason"]
            )
        _code, out = await run_cli(
            capsys, "gate", "status", "--config", str(write_config(gw, tmp_path / "gw.toml"))
        )
        said = "input drift 'pc1': PSI "
        (line,) = [x.strip() for x in out.splitlines() if said in x]
        assert line.startswith(("dry run: " if dry_run else "") + said), out
        assert line.endswith("against the manifest's reference, alert at 0.1: worse"), out
