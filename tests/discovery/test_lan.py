"""Real multicast between two network namespaces: the gateway on one side, a device on the other."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

import pytest

from gateway.core.settings import DiscoverySettings
from gateway.discovery.advertise import Advertiser
from gateway.discovery.browse import DeviceBrowser
from gateway.discovery.net import Lan as MdnsLan
from gateway.discovery.net import open_lan
from gateway.inventory.store import Inventory
from tests.discovery.netns import ROOT, Lan, inside

pytestmark = [pytest.mark.netns, pytest.mark.slow]  # slow: SLOW_TESTS=1 runs it (a .ci/run step)

FP = "ab" * 32


async def until(cond: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def gateway_lan(lan: Lan, **kw: object) -> tuple[DiscoverySettings, MdnsLan]:
    settings = DiscoverySettings(interfaces=(lan.gw.ifname,), **kw)  # type: ignore[arg-type]
    with inside(lan.gw.ns):
        return settings, open_lan(settings)


async def test_device_side_finds_gateway_with_port_and_txt(lan: Lan) -> None:
    settings, mdns = gateway_lan(lan)
    adv = Advertiser(
        settings, site="plant-7", http_port=8443, tls=True, mqtt_port=1883, cert_sha256=FP, lan=mdns
    )
    try:
        browser = await lan.spawn(
            lan.dev, "browse", "--ip", lan.dev.ipv4, "--type", "_ota-gateway._tcp.local.", "_mqtt._tcp.local."
        )
        await browser.expect("browsing")
        await adv.start()
        assert adv.name is not None and adv.name.startswith("OTA Gateway plant-7 ")
        found = await browser.expect("found", name=adv.name)
        assert found["port"] == 8443
        assert found["txt"] == {
            "txtvers": "1",
            "site": "plant-7",
            "api": "/",
            "tls": "1",
            "mqtt": "1883",
            "fp": FP,
        }
        assert lan.gw.ipv4 in found["addresses"]
        mqtt = await browser.expect("found", name=adv.mqtt_name)
        assert mqtt["port"] == 1883

        await adv.update(mqtt_port=1884, api_path="/ota/")
        changed = await browser.expect("found", name=adv.name, change="Updated")
        assert changed["txt"]["mqtt"] == "1884" and changed["txt"]["api"] == "/ota/"

        name = adv.name
        await adv.stop()
        await browser.expect("removed", name=name)
    finally:
        await adv.stop()
        await mdns.close()


async def test_device_joins_inventory_changes_and_leaves(lan: Lan) -> None:
    settings, mdns = gateway_lan(lan)
    inventory = Inventory(None)
    browser = DeviceBrowser(settings, inventory, clock=lambda: 1000.0, lan=mdns)
    await browser.start()
    try:
        device = await lan.spawn(
            lan.dev,
            "device",
            "--ip",
            lan.dev.ipv4,
            "--name",
            "cam 1",
            "--txt",
            "id=cam-1",
            "hw=rev2",
            "fw=1.2.0",
            "model=detector",
            "model_version=1.0.0",
            "region=eu-west",
        )
        await device.expect("ready")
        await until(lambda: inventory.get("cam-1") is not None, what="cam-1 in the inventory")
        rec = inventory.get("cam-1")
        assert rec is not None
        assert dict(rec.attrs) == {"hw": "rev2", "fw": "1.2.0", "region": "eu-west"}
        assert (rec.model_id, rec.model_version, rec.sources, rec.gone) == (
            "detector",
            "1.0.0",
            {"mdns"},
            False,
        )

        await device.send(
            op="update",
            txt={"id": "cam-1", "hw": "rev3", "fw": "1.3.0", "model": "detector", "model_version": "1.1.0"},
        )
        await until(
            lambda: (r := inventory.get("cam-1")) is not None and r.attrs.get("hw") == "rev3",
            what="TXT change",
        )
        rec = inventory.get("cam-1")
        assert rec is not None and rec.model_version == "1.1.0" and rec.attrs["fw"] == "1.3.0"

        await device.send(op="goodbye")
        await device.expect("gone")
        await until(lambda: (r := inventory.get("cam-1")) is not None and r.gone, what="cam-1 gone")
        assert browser.devices == {}
    finally:
        await browser.stop()
        await mdns.close()


async def test_second_gateway_with_the_same_name_renames_itself(lan: Lan) -> None:
    other = await lan.spawn(lan.dev, "gateway", "--ip", lan.dev.ipv4, "--instance", "OTA Gateway clash")
    first = await other.expect("ready")
    assert first["name"] == "OTA Gateway clash._ota-gateway._tcp.local."
    settings, mdns = gateway_lan(lan)
    adv = Advertiser(
        settings,
        site="s",
        http_port=8080,
        tls=False,
        mqtt_port=1883,
        cert_sha256=None,
        instance="OTA Gateway clash",
        lan=mdns,
    )
    try:
        await adv.start()
        assert adv.name == "OTA Gateway clash-2._ota-gateway._tcp.local."
        assert adv.mqtt_name == "OTA Gateway clash-2._mqtt._tcp.local."
        # A device browsing the LAN sees both gateways, each at its own address.
        browser = await lan.spawn(
            lan.dev, "browse", "--ip", lan.dev.ipv4, "--type", "_ota-gateway._tcp.local."
        )
        mine = await browser.expect("found", name=adv.name)
        theirs = await browser.expect("found", name=first["name"])
        assert lan.gw.ipv4 in mine["addresses"] and lan.gw.ipv4 not in theirs["addresses"]
        assert mine["server"] != theirs["server"]
    finally:
        await adv.stop()
        await mdns.close()


async def test_malformed_and_excess_records_are_ignored(lan: Lan, caplog: pytest.LogCaptureFixture) -> None:
    settings, mdns = gateway_lan(lan, max_devices=2)
    inventory = Inventory(None)
    browser = DeviceBrowser(settings, inventory, lan=mdns)
    await browser.start()
    try:
        bad_txt = bytes([7]) + b"hw=rev2" + bytes([6]) + b"id=a/b"  # the id has a '/': not a device id
        bad = await lan.spawn(
            lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "bad", "--raw-txt", bad_txt.hex()
        )
        await bad.expect("ready")
        await until(lambda: browser.stats.malformed == 1, what="the malformed record counted")
        assert "ignoring malformed record of 'bad._ota-device._tcp.local.'" in caplog.text
        assert inventory.devices == {}

        good = await lan.spawn(
            lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "good", "--txt", "id=good-1"
        )
        await good.expect("ready")
        await until(lambda: inventory.get("good-1") is not None, what="the good device")
        # max_devices = 2: "bad" and "good" fill it, a third name is dropped and counted.
        extra = await lan.spawn(
            lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "extra", "--txt", "id=extra-1"
        )
        await extra.expect("ready")
        await until(lambda: browser.stats.dropped_full >= 1, what="the extra device dropped")
        assert inventory.get("extra-1") is None
        assert set(inventory.devices) == {"good-1"}
    finally:
        await browser.stop()
        await mdns.close()


async def test_device_that_vanishes_is_gone_when_its_records_expire(lan: Lan) -> None:
    """Without a goodbye, the device is gone when its PTR record's TTL runs out.

    python-zeroconf holds a PTR for at least 1125 s, too long for a test, so the test moves the
    gateway's record cache forward in time through zeroconf's own expiry path (what its periodic
    cleanup does with the real clock) after killing the device.
    """
    from zeroconf import RecordUpdate
    from zeroconf._utils.time import current_time_millis

    settings, mdns = gateway_lan(lan)
    inventory = Inventory(None)
    browser = DeviceBrowser(settings, inventory, lan=mdns)
    await browser.start()
    try:
        device = await lan.spawn(
            lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "cam 9", "--txt", "id=cam-9"
        )
        await device.expect("ready")
        await until(lambda: inventory.get("cam-9") is not None, what="cam-9 in the inventory")
        device.proc.kill()  # no goodbye
        await device.proc.wait()
        zc = mdns.aiozc.zeroconf
        later_ms = current_time_millis() + 2 * 3600 * 1000
        expired = zc.cache.async_expire(later_ms)
        zc.record_manager.async_updates(later_ms, [RecordUpdate(r, r) for r in expired])
        zc.record_manager.async_updates_complete(False)
        await until(lambda: (r := inventory.get("cam-9")) is not None and r.gone, what="cam-9 gone")
    finally:
        await browser.stop()
        await mdns.close()


async def test_discover_command_lists_gateways_and_devices(lan: Lan) -> None:
    """``ota-gateway discover --json`` in one namespace; a gateway and two devices in the other."""
    gw = await lan.spawn(
        lan.dev, "gateway", "--ip", lan.dev.ipv4, "--instance", "OTA Gateway far", "--port", "8081"
    )
    ok = await lan.spawn(
        lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "cam 5", "--txt", "id=cam-5", "hw=rev2"
    )
    bad = await lan.spawn(lan.dev, "device", "--ip", lan.dev.ipv4, "--name", "cam 6", "--txt", "hw=rev2")
    for peer in (gw, ok, bad):
        await peer.expect("ready")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lan.gw.ns, sys.executable, "-m", "gateway", "discover", "--json",
        "--timeout", "2", "--interface", lan.gw.ifname,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTA_GATEWAY_")},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    found = json.loads(out)
    (gateway,) = found["gateways"]
    assert gateway["name"] == "OTA Gateway far"
    assert gateway["port"] == 8081 and lan.dev.ipv4 in gateway["addresses"]
    assert gateway["txt"]["site"] == "peer-site" and gateway["txt"]["mqtt"] == "1883"
    devices = {d["name"]: d for d in found["devices"]}
    assert devices["cam 5"]["device_id"] == "cam-5" and devices["cam 5"]["txt"]["hw"] == "rev2"
    assert "device id" in devices["cam 6"]["ignored"]
