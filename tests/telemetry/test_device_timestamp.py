"""The device's own ``timestamp`` goes upstream with the journaled sample, as the device sent it (a
real outbox on disk), and never places the sample in a window; a timestamp that is neither a number
nor a short text is refused with the field named.

Before this, the README and :mod:`gateway.core.metrics` said the device's timestamp was "kept for
the record", but the sample record dropped it: the cloud could not tell when a device measured, and
nobody could time a message from the device's publish to the outbox (``tests/bench/site_20k.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import FormatError
from gateway.core.metrics import parse_metrics
from gateway.core.settings import TelemetrySettings
from gateway.inventory.store import Inventory
from gateway.runtime.stats import Stats
from gateway.telemetry.ingest import Telemetry
from gateway.uplink.outbox import Outbox

BASE = {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10}


async def test_the_journaled_sample_keeps_the_device_timestamp_as_sent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=1 << 20, max_age_s=3600.0)
    sent: list[Any] = [1764000000.123456, "2026-11-25T10:00:00.5Z", 1764000000123, None]
    try:
        t = Telemetry(TelemetrySettings(), Inventory(None), outbox, Stats(), on_event=lambda *_: None)
        for stamp in sent:
            doc = BASE if stamp is None else {**BASE, "timestamp": stamp}
            await t.metrics("cam-1", json.dumps(doc).encode(), 100.0)
        records = [r for r in outbox.peek("default") if r.kind == "sample"]
    finally:
        outbox.close()
    assert [r.body.get("timestamp") for r in records] == sent
    assert [r.at for r in records] == [100.0] * 4  # the gateway's receive time places it


@pytest.mark.parametrize(
    "stamp",
    [{"s": 1}, [1], True, "x" * 65, "", "a\nb", 1e300, 10**400],
    ids=["object", "list", "bool", "65 characters", "empty", "control character", "1e300", "10**400"],
)
def test_a_timestamp_that_is_no_time_is_refused_naming_the_field(stamp: Any) -> None:
    with pytest.raises(FormatError, match="timestamp must be Unix seconds or a text"):
        parse_metrics("cam-1", {**BASE, "timestamp": stamp}, 100.0)
