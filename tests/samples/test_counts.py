"""The samples' counts where people read them: ``/status``, Prometheus ``/metrics`` and the
dashboard, from a real gateway whose clock the test moves to the next UTC day (the budget's day)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.samples.budget import DAY_S
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, until
from tests.samples.upload_server import TOKEN, stored, upload_server


class Clock:
    """Wall time from a chosen instant on, moved forward by the test."""

    def __init__(self, start: float) -> None:
        self.start, self.began = start, time.monotonic()

    def __call__(self) -> float:
        return self.start + time.monotonic() - self.began


def sample(n: int, reason: str) -> dict[str, Any]:
    return {"reason": reason, "model_version": "1.0.0", "class": "person", "confidence": 0.4,
            "embedding": [float(n)] * 64}  # fmt: skip


async def get(gw: Gateway, path: str) -> str:
    host, port = gw.operator_addresses[0][:2]
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}{path}") as r:
        assert r.status == 200, path
        return await r.text()


async def test_kept_sent_and_dropped_by_budget_by_reason_on_status_metrics_and_dashboard(
    reg: Registry, tmp_path: Path
) -> None:
    noon = (time.time() // DAY_S) * DAY_S + DAY_S / 2
    clock = Clock(noon)
    root = tmp_path / "up"
    with upload_server(root) as up:
        s = gateway_settings(
            reg,
            tmp_path / "data",
            samples={
                "enabled": True,
                "upload_url": up.url + "/samples",
                "upload_token": TOKEN,
                "budget_bytes_per_day": 1000,
                "choose_interval_s": 0.1,
            },
        )  # fmt: skip  (256-byte samples: at noon 500 bytes are released: one goes)
        gw = Gateway.from_settings(s, clock=clock)
        await gw.start()
        try:
            async with aiohttp.ClientSession() as http:
                for n, reason in enumerate(["error"] * 3 + ["random"] * 5):
                    async with http.post(
                        f"{base_url(gw)}/devices/cam-{n % 2}/samples", json=sample(n, reason)
                    ) as r:
                        assert r.status == 200
            await until(lambda: len(stored(root)) == 1, 10, "one sample sent")
            await until(lambda: gw.samples.status()["counts"].get("sent"), 10, "counted as sent")
            clock.start += DAY_S  # the day ends: the rest is dropped by the budget
            await until(lambda: gw.samples.status()["counts"].get("dropped_budget"), 10, "dropped by budget")
            counts = gw.samples.status()["counts"]
            assert counts["kept"] == {"error": 3, "random": 5}
            assert counts["sent"] == {"error": 1} and counts["sent_bytes"] == {"error": 256}
            assert counts["dropped_budget"] == {"error": 2, "random": 5}

            status = json.loads(await get(gw, "/status"))
            assert status["samples"]["counts"]["dropped_budget"] == {"error": 2, "random": 5}
            metrics = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(await get(gw, "/metrics"))
                for s in fam.samples
            }
            total = "ota_gateway_samples_total"
            assert metrics[(total, (("outcome", "sent"), ("reason", "error")))] == 1
            assert metrics[(total, (("outcome", "dropped_budget"), ("reason", "random")))] == 5
            assert metrics[(total, (("outcome", "kept"), ("reason", "random")))] == 5
            assert metrics[("ota_gateway_samples_sent_bytes_total", (("reason", "error"),))] == 256
            assert metrics[("ota_gateway_samples_budget_bytes", ())] == 1000
            rows = dict(json.loads(await get(gw, "/dashboard/state"))["samples"])
            assert rows["Error"] == "3 kept, 1 sent, 2 dropped by budget"
            assert rows["Random"] == "5 kept, 0 sent, 5 dropped by budget"
            assert rows["Upload"] == "no failures"
        finally:
            await gw.stop()
