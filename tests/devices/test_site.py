"""End to end: the reference device agent against a real gateway behind a real nginx registry, and a
site of many simulated devices whose decisions are checked against the rules one by one."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp

from gateway.core.bucket import in_rollout
from gateway.core.cohort import parse_cohort
from gateway.core.device import DeviceRecord
from gateway.core.manifest import parse_deployment
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until
from tests.peers import nginx
from tests.reference_agent import DeviceAgent


async def test_reference_agent_updates_through_the_gateway(reg: Registry, tmp_path: Path) -> None:
    model = os.urandom(1_500_000)
    manifest = reg.publish(model, min_firmware="1.2.0")
    with nginx(reg.root) as upstream:
        settings = gateway_settings(reg, tmp_path / "data", upstream=upstream.url, gates=OPEN_FIRST)
        async with running(settings) as gw:
            await until(lambda: gw.store.is_verified(manifest["sha256"]), what="mirrored")
            agent = DeviceAgent(
                base_url(gw),
                "cam-7",
                reg.public_key.read_bytes(),
                tmp_path,
                attrs={"fw": "1.4.0", "hw": "rev2"},
            )
            async with aiohttp.ClientSession() as s:
                assert await agent.update_once(s, interrupt_after=400_000)  # resumed mid-download
                assert (tmp_path / "cam-7-active.bin").read_bytes() == model
                assert agent.events == ["downloaded", "verified", "activated", "healthy"]
                assert not await agent.update_once(s)  # up to date now: 204
            rec = gw.inventory.get("cam-7")
            assert rec is not None and rec.model_version == "1.0.0" and rec.last_event == "healthy"
        artifact_requests = [
            line
            for line in upstream.access_log()
            if "/artifacts/" in line and ".sig" not in line and ".chunks" not in line  # the model itself
        ]
        assert len(artifact_requests) == 1  # the device's two downloads cost the uplink nothing


async def test_a_site_of_many_devices_gets_exactly_what_the_rules_say(reg: Registry, tmp_path: Path) -> None:
    """300 devices of mixed hardware, lines and firmware; three deployments; one poll each, in parallel."""
    m1, m2 = os.urandom(20_000), os.urandom(20_000)
    reg.publish(m1, version="1.0.0")
    reg.publish(m2, version="2.0.0", cohort="hw:rev2 AND NOT line:3", percent=40, min_firmware="1.8.0")
    reg.publish(os.urandom(20_000), version="3.0.0", start="2099-01-01T00:00:00Z")
    sha2 = hashlib.sha256(m2).hexdigest()
    with nginx(reg.root) as upstream:
        settings = gateway_settings(
            reg, tmp_path / "data", upstream=upstream.url, mirror={"poll_interval_s": 1.0}, gates=OPEN_FIRST
        )
        async with running(settings) as gw:
            await until(
                lambda: gw.store.is_verified(sha2) and len(gw.mirror.index.deployments) == 3, what="mirrored"
            )  # type: ignore[union-attr]
            index_before = sum("index.json" in line for line in upstream.access_log())
            devices = {
                f"dev-{i:03d}": {
                    "hw": ("rev1", "rev2")[i % 2],
                    "line": str(i % 4),
                    "fw": ("1.6.0", "1.9.0")[i % 3 != 0],
                }
                for i in range(300)
            }
            base = base_url(gw)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:

                async def one(dev: str, attrs: dict[str, str]) -> tuple[str, int, str]:
                    async with s.get(
                        f"{base}/devices/{dev}/updates", params={**attrs, "model_id": "detector"}
                    ) as r:
                        body = await r.json() if r.status == 200 else None
                        return dev, r.status, body["version"] if body else r.headers["X-OTA-Reason"]

                t0 = asyncio.get_running_loop().time()
                answers = await asyncio.gather(*(one(d, a) for d, a in devices.items()))
                elapsed = asyncio.get_running_loop().time() - t0
            index_after = sum("index.json" in line for line in upstream.access_log())
            d2 = parse_deployment(next(d.raw for d in gw.mirror.index.deployments if d.version == "2.0.0"))  # type: ignore[union-attr]
            cohort = parse_cohort(d2.target_cohort)
            for dev, status, got in answers:
                attrs = devices[dev]
                wants_2 = cohort.matches(attrs) and in_rollout(40, d2.key, dev) and attrs["fw"] >= "1.8.0"
                assert (status, got) == ((200, "2.0.0") if wants_2 else (200, "1.0.0")), (
                    dev,
                    attrs,
                    status,
                    got,
                )
            assert any(got == "2.0.0" for _, _, got in answers) and any(
                got == "1.0.0" for _, _, got in answers
            )
            # The upstream saw only the mirror's own interval polls while 300 devices asked.
            assert index_after - index_before <= 2 * (elapsed / 1.0 + 2)
            rec = gw.inventory.get("dev-000")
            assert isinstance(rec, DeviceRecord) and rec.attrs["fw"] == "1.6.0"
