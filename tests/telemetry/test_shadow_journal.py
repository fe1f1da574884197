"""A shadow message's agreement goes upstream with the journaled sample, as the device sent it (a
real outbox on disk)."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.settings import TelemetrySettings
from gateway.inventory.store import Inventory
from gateway.runtime.stats import Stats
from gateway.telemetry.ingest import Telemetry
from gateway.uplink.outbox import Outbox

AGREE = {
    "frames": 100,
    "agree": 90,
    "classes": {"person": [60, 58], "car": [40, 32]},
    "pairs": {"car->person": 8, "person->car": 2},
    "conf_diff_mean": -0.01,
}


async def test_the_journaled_shadow_sample_carries_its_agreement(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=1 << 20, max_age_s=3600.0)
    try:
        t = Telemetry(TelemetrySettings(), Inventory(None), outbox, Stats(), on_event=lambda *_: None)
        shadow = {"model_id": "detector", "model_version": "2.0.0", "shadow": True, "agreement": AGREE}
        await t.metrics("cam-1", json.dumps(shadow).encode(), 100.0)
        await t.metrics("cam-1", {"model_id": "detector", "model_version": "1.0.0"}, 100.0)
        bodies = [r.body for r in outbox.peek("default") if r.kind == "sample"]
    finally:
        outbox.close()
    assert bodies[0]["shadow"] is True and bodies[0]["agreement"] == AGREE
    assert "agreement" not in bodies[1]
