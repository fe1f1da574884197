"""``devices.access = "open"`` (the zero-config default): any id is believed, but each id is held to
the address it first used, on HTTP; over MQTT an anonymous client is named by its client id and
held to its own topics. The binding table's rules are pure and tested as a table first."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.core.settings import DeviceSettings
from gateway.inventory.access import Credentials, OpenBindings
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running
from tests.peers import need

METRICS = {
    "model_version": "1.0.0",
    "model_id": "detector",
    "avg_latency_ms": 42.0,
    "num_inferences": 100,
    "num_errors": 1,
    "cpu_percent": 30.0,
    "ram_percent": 40.0,
}


# -- the pure table ------------------------------------------------------------------------------


def test_an_id_is_held_to_its_first_address_until_silent() -> None:
    b = OpenBindings(ttl_s=100.0, max_entries=10)
    assert b.seen("cam-1", "10.0.0.5", now=0.0) is None
    refusal = b.seen("cam-1", "10.0.0.66", now=50.0)
    assert refusal is not None and refusal.status == 403 and "bound to another address" in refusal.reason
    assert b.seen("cam-1", "10.0.0.5", now=120.0) is None  # activity from the owner keeps it
    assert b.seen("cam-1", "10.0.0.66", now=200.0) is not None  # 80 s after its last activity
    assert b.seen("cam-1", "10.0.0.66", now=220.1) is None  # silent for > ttl: free again, rebound
    assert b.bound_to("cam-1", 220.1) == "10.0.0.66"
    assert b.seen("cam-1", "10.0.0.5", now=221.0) is not None


def test_no_address_neither_binds_nor_is_refused() -> None:
    b = OpenBindings(ttl_s=100.0, max_entries=10)
    assert b.seen("cam-1", None, now=0.0) is None
    assert len(b) == 0


def test_the_table_is_bounded_and_drops_the_least_recently_active() -> None:
    b = OpenBindings(ttl_s=1000.0, max_entries=3)
    for i in range(3):
        b.seen(f"cam-{i}", f"10.0.0.{i}", now=float(i))
    b.seen("cam-0", "10.0.0.0", now=10.0)  # cam-1 is now the least recently active
    b.seen("cam-9", "10.0.0.9", now=11.0)
    assert len(b) == 3
    assert b.bound_to("cam-1", 11.0) is None
    assert {b.bound_to(d, 11.0) for d in ("cam-0", "cam-2", "cam-9")} == {"10.0.0.0", "10.0.0.2", "10.0.0.9"}
    for i in range(1000):
        b.seen(f"x-{i}", "10.1.0.1", now=20.0 + i)
    assert len(b) == 3


def test_expired_bindings_are_dropped_as_time_passes() -> None:
    b = OpenBindings(ttl_s=5.0, max_entries=100)
    for i in range(50):
        b.seen(f"cam-{i}", "10.0.0.1", now=0.0)
    b.seen("late", "10.0.0.2", now=6.0)
    assert len(b) == 1


@pytest.mark.parametrize(
    ("access", "allow_unknown", "lab", "device", "password", "cn", "allowed"),
    [
        ("open", True, False, "cam-1", None, None, True),  # anonymous, named by its client id
        ("open", True, False, "cam-1", "anything", None, True),
        ("open", False, False, "cam-1", None, None, False),  # not in the inventory
        ("open", False, False, "known-1", None, None, True),
        ("open", True, False, "../etc", None, None, False),
        ("open", True, False, None, None, None, False),
        ("token", True, False, "cam-1", None, None, False),
        ("token", True, False, "cam-1", "wrong-token", None, False),
        ("token", True, False, "cam-1", "a-site-token", None, True),
        ("token", True, False, "cam-1", None, "cam-1", True),  # a site-CA certificate, any mode
        ("mtls", True, False, "cam-1", "a-site-token", None, False),
        ("mtls", True, False, "cam-1", None, "cam-1", True),
        ("mtls", False, False, "cam-1", None, "cam-1", False),
        ("token", True, True, "cam-1", None, None, True),  # lab mode lets everyone in
    ],
)
def test_mqtt_allows(
    access: str,
    allow_unknown: bool,
    lab: bool,
    device: str | None,
    password: str | None,
    cn: str | None,
    allowed: bool,
) -> None:
    creds = Credentials(
        DeviceSettings(access=access, site_token="a-site-token", allow_unknown=allow_unknown), {"known-1": {}}
    )
    assert creds.mqtt_allows(device, password, cn, lab_mode=lab) is allowed


# -- HTTP, on a real gateway -----------------------------------------------------------------------


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(gateway_settings(reg, tmp_path / "data", telemetry={"window_s": 1.0})) as g:
        assert g.settings.devices.access == "open"  # the default
        yield g


async def request(gw: Gateway, method: str, path: str, source: str, body: object = None) -> int:
    """From a chosen loopback address (127.0.0.0/8 is all ours on Linux)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.request(method, base_url(gw) + path, json=body) as r,
    ):
        await r.read()
        return r.status


async def test_open_mode_refuses_writes_for_a_device_from_another_address(gw: Gateway) -> None:
    assert await request(gw, "GET", "/devices/cam-1/updates", "127.0.0.1") == 204
    # Another host on the LAN claims to be cam-1: its metrics and events are refused and counted.
    assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.2", METRICS) == 403
    event = {"event": "failed", "model_id": "detector", "version": "1.0.0"}
    assert await request(gw, "POST", "/devices/cam-1/events", "127.0.0.2", event) == 403
    assert gw.stats["devices.refused_open_binding"] == 2
    assert gw.stats["telemetry.samples"] == 0
    rec = gw.inventory.get("cam-1")
    assert rec is not None and rec.model_version is None
    # Polls from elsewhere are answered (read only): they record nothing, and do not steal or
    # refresh the binding.
    assert await request(gw, "GET", "/devices/cam-1/updates?hw=evil&fw=0.0.1", "127.0.0.2") == 204
    rec = gw.inventory.get("cam-1")
    assert rec is not None and "hw" not in rec.attrs and "fw" not in rec.attrs
    assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.2", METRICS) == 403
    # The device itself still writes.
    assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.1", METRICS) == 200
    assert gw.stats["telemetry.samples"] == 1
    # A device that never polled is bound by its first write.
    assert await request(gw, "POST", "/devices/cam-2/metrics", "127.0.0.3", METRICS) == 200
    assert await request(gw, "POST", "/devices/cam-2/metrics", "127.0.0.1", METRICS) == 403
    assert gw.status_view.status()["counters"]["devices.refused_open_binding"] == 4


async def test_the_binding_expires_after_silence(reg: Registry, tmp_path: Path) -> None:
    now = [1_000_000.0]
    settings = gateway_settings(reg, tmp_path / "data", devices={"open_binding_ttl_s": 60.0})
    gw = Gateway.from_settings(
        settings, clock=lambda: now[0]
    )  # a clock we move: an hour of silence in no time
    await gw.start()
    try:
        assert await request(gw, "GET", "/devices/cam-1/updates", "127.0.0.1") == 204
        assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.9", METRICS) == 403
        now[0] += 61.0
        assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.9", METRICS) == 200
        assert await request(gw, "POST", "/devices/cam-1/metrics", "127.0.0.1", METRICS) == 403
    finally:
        await gw.stop()


# -- MQTT, on the same gateway ----------------------------------------------------------------------


async def mosquitto_pub(gw: Gateway, client_id: str, topic: str, payload: str) -> int:
    assert gw.broker is not None
    port = gw.broker.addresses["tcp"][1]
    cmd = [need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-i", client_id,
           "-q", "1", "-t", topic, "-m", payload]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), 20)


async def test_open_mode_mqtt_names_devices_by_client_id_and_holds_them_to_their_topics(gw: Gateway) -> None:
    assert gw.broker is not None
    assert await mosquitto_pub(gw, "cam-7", "devices/cam-7/metrics", json.dumps(METRICS)) == 0
    assert gw.stats["telemetry.samples"] == 1  # durable before the PUBACK that ended mosquitto_pub
    rec = gw.inventory.get("cam-7")
    assert rec is not None and rec.model_version == "1.0.0"
    await mosquitto_pub(gw, "cam-7", "devices/cam-8/metrics", json.dumps(METRICS))
    assert gw.broker.stats()["publish_refused"] == 1
    assert gw.stats["telemetry.samples"] == 1
    assert gw.inventory.get("cam-8") is None


async def test_token_mode_still_refuses_anonymous_mqtt_clients(reg: Registry, tmp_path: Path) -> None:
    settings = gateway_settings(
        reg, tmp_path / "data", devices={"access": "token", "site_token": "a-site-token"}
    )
    async with running(settings) as gw:
        assert await mosquitto_pub(gw, "cam-7", "devices/cam-7/metrics", json.dumps(METRICS)) != 0
        assert gw.stats["telemetry.samples"] == 0
