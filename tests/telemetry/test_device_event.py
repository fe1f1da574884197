"""A device event reaches the telemetry's listeners as one frozen value,
:class:`~gateway.core.events.DeviceEvent`, not as five loose arguments: the MQTT hook's path here,
with a real outbox on disk (the HTTP and DDI paths build the same value; their system tests are in
tests/devices and tests/http_api)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.core.events import DeviceEvent
from gateway.core.settings import TelemetrySettings
from gateway.inventory.store import Inventory
from gateway.runtime.stats import Stats
from gateway.telemetry.ingest import Telemetry
from gateway.uplink.outbox import Outbox


async def test_every_listener_gets_the_same_frozen_event_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=1 << 20, max_age_s=3600.0)
    heard: list[tuple[str, DeviceEvent]] = []
    try:
        t = Telemetry(
            TelemetrySettings(),
            Inventory(None),
            outbox,
            Stats(),
            on_event=[lambda e: heard.append(("first", e)), lambda e: heard.append(("second", e))],
        )
        failed = {"event": "failed", "model_id": "detector", "version": "2.0.0", "reason": "oom"}
        t.mqtt_message("cam-1", "devices/cam-1/events", json.dumps(failed).encode(), 100.0)
        t.mqtt_message("cam-2", "devices/cam-2/events", b'{"event": "healthy"}', 101.0)
        t.mqtt_message("cam-3", "devices/cam-3/events", b'{"event": "exploded"}', 102.0)  # refused
    finally:
        outbox.close()
    one = DeviceEvent("cam-1", "failed", "detector", "2.0.0", "oom")
    two = DeviceEvent("cam-2", "healthy")
    assert heard == [("first", one), ("second", one), ("first", two), ("second", two)]
    assert heard[0][1] is heard[1][1]  # one value, handed to each
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.event = "healthy"  # type: ignore[misc]
