"""Real multicast between two network namespaces: the gateway on one side, a device on the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from gateway.discovery.advertise import Advertiser
from gateway.discovery.browse import DeviceBrowser
from gateway.discovery.net import Lan as MdnsLan
from gateway.discovery.net import open_lan
from gateway.inventory.store import Inventory
from gateway.settings import DiscoverySettings
from tests.discovery.netns import Lan, inside

pytestmark = pytest.mark.netns

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
