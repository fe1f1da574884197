"""hawkBit DDI on the real gateway: the upstream cost of 200 DDI devices, bad input, and who may
speak for whom.

- 200 DDI devices poll, fetch their deployment, download, report: the test's own upstream sees no
  index request from it and the artifact fetched once for the site.
- Hostile feedback and configData bodies get a 4xx and change nothing (the inventory and the gate
  evidence, read back over the operator API); a device's token speaks only for its own id; a device
  can only report on an action it was offered; unknown controller ids follow
  ``devices.allow_unknown``; another tenant is not served.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import registry
from tests.conftest import Registry
from tests.ddi_client import DdiDevice, feedback_body
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until
from tests.mirror.hostile import Hostile


async def test_200_ddi_devices_cost_the_upstream_no_index_request_and_one_artifact_fetch(
    reg: Registry, hostile: Hostile, tmp_path: Path
) -> None:
    model = os.urandom(300_000)
    reg.publish(model, version="1.0.0")
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        upstream=hostile.url,
        mirror={"poll_interval_s": 3600.0, "retry_initial_s": 0.05, "retry_max_s": 0.2},
        ddi={"enabled": True},
        gates=OPEN_FIRST,
    )
    async with (
        running(settings) as gw,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as http,
    ):
        base = base_url(gw)
        await until(lambda: gw.store.verified, timeout_s=30, what="the artifact mirrored")
        index_before = len(hostile.requests("index.json"))
        assert index_before >= 1
        artifact = [p for p, _ in hostile.log if p.endswith(".bin")]
        assert len(artifact) == 1  # the one fetch of the site

        installed: set[str] = set()

        async def device(i: int) -> None:
            rng = random.Random(i)
            d = DdiDevice(http, base, f"ddi-{i:03d}", attrs={"hw": "rev2"})
            await asyncio.sleep(rng.uniform(0, 0.5))
            while d.device_id not in installed:
                links = (await d.poll()).get("_links", {})
                if "deploymentBase" in links:
                    status, doc = await d.get_json(links["deploymentBase"]["href"])
                    assert status == 200, doc
                    assert await d.download(doc) == model
                    fb = links["deploymentBase"]["href"] + "/feedback"
                    assert await d.feedback(fb, doc["id"], "proceeding", "none") == 200
                    assert await d.feedback(fb, doc["id"], "closed", "success") == 200
                    installed.add(d.device_id)
                await asyncio.sleep(rng.uniform(0.05, 0.2))
            assert "deploymentBase" not in (await d.poll()).get("_links", {})

        await asyncio.wait_for(asyncio.gather(*(device(i) for i in range(200))), 90)
        assert len(installed) == 200
        assert len(hostile.requests("index.json")) == index_before  # no index request from 200 devices
        assert [p for p, _ in hostile.log if p.endswith(".bin")] == artifact  # still the one fetch
        records = {r.device_id: r for r in gw.inventory.records()}
        assert all(records[f"ddi-{i:03d}"].model_version == "1.0.0" for i in range(200))
        async with http.get(f"{_operator(gw)}/metrics") as r:  # the same Prometheus counts
            exposition = await r.text()
        assert 'ota_gateway_polls_total{answer="ddi",reason="eligible"}' in exposition
        assert 'ota_gateway_polls_total{answer="ddi",reason="up_to_date"}' in exposition


def _operator(gw: Any) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"http://{host}:{port}"


HOSTILE_FEEDBACK: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b'{"status": "closed"}',
    b'{"id": 1, "status": {"execution": "closed", "result": {"finished": "success"}}}',  # not this action
    b'{"status": {"execution": "closed", "result": {"finished": "none"}}}',
    b'{"status": {"execution": "exploded", "result": {"finished": "success"}}}',
    b'{"status": {"execution": "closed", "result": {"finished": "failure"}, "details": [1]}}',
    json.dumps(
        {"status": {"execution": "closed", "result": {"finished": "failure"}, "details": ["x" * 5000]}}
    ).encode(),
    b'{"status": {"execution": "closed", "result": {"finished": "success"}}, "x": "'
    + b"y" * (2 << 20)
    + b'"}',
    b"\xff\xfe{}",
]


async def offered(device: DdiDevice, timeout_s: float = 20.0) -> dict[str, Any]:
    """The device's poll links once they offer a deployment: a verified blob is offered only once
    the index that names it is applied, a moment later (under load, after the next poll or two)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while "deploymentBase" not in (links := (await device.poll()).get("_links", {})):
        assert asyncio.get_running_loop().time() < deadline, f"no deployment offered: {links}"
        await asyncio.sleep(0.05)  # the next poll, as a device's would come
    return dict(links)


@pytest.mark.parametrize("allow_unknown", [True, False])
async def test_hostile_bodies_and_other_voices_change_nothing(
    reg: Registry, tmp_path: Path, allow_unknown: bool
) -> None:
    reg.publish(os.urandom(10_000), version="1.0.0", cohort="hw:rev2")
    tokens = {"cam-a": "token-of-cam-a", "cam-b": "token-of-cam-b"}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tmp_path / "tokens.json"), "site_token": "the-site-token",
                 "allow_unknown": allow_unknown},
        ddi={"enabled": True},
        gates=OPEN_FIRST,
    )  # fmt: skip
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        a = DdiDevice(http, base, "cam-a", tokens["cam-a"], attrs={"hw": "rev2"})
        b = DdiDevice(http, base, "cam-b", tokens["cam-b"], attrs={"hw": "rev1"})  # outside the cohort
        await until(lambda: gw.store.verified, timeout_s=20, what="the artifact mirrored")
        links = await offered(a)
        status, doc = await a.get_json(links["deploymentBase"]["href"])
        assert status == 200
        action, feedback = doc["id"], links["deploymentBase"]["href"] + "/feedback"
        assert "_links" not in await b.poll() or "deploymentBase" not in (await b.poll()).get("_links", {})

        async def state() -> Any:
            async with http.get(f"{_operator(gw)}/devices") as r:
                devices = {d["device_id"]: d for d in (await r.json())["devices"]}
            return {k: (v["last_event"], v["model_version"]) for k, v in devices.items()}

        before = await state()
        for body in HOSTILE_FEEDBACK:
            async with http.post(
                feedback, data=io.BytesIO(body), headers={**a.headers, "Content-Type": "application/json"}
            ) as r:
                assert 400 <= r.status < 500, (body[:60], r.status, await r.text())
        for body in (b"[]", b'{"data": {"hw": 3}}', b'{"data": {"model_version": "../x"}}', b"{"):
            async with http.put(f"{a.controller}/configData", data=body, headers=a.headers) as r:
                assert r.status == 400, await r.text()
        # cam-b's own token on cam-a's URLs: it speaks only for itself
        for method, url in (("GET", a.controller), ("POST", feedback), ("PUT", f"{a.controller}/configData")):
            body = feedback_body(action, "closed", "success") if method != "GET" else None
            async with http.request(method, url, json=body, headers=b.headers) as r:
                assert r.status == 403, await r.text()
        # cam-b reporting on an action it was never offered: refused, nothing recorded
        assert (
            await b.feedback(f"{b.controller}/deploymentBase/{action}/feedback", action, "closed", "success")
            == 409
        )
        assert (
            await b.feedback(f"{b.controller}/cancelAction/{action}/feedback", action, "closed", "success")
            == 409
        )
        # no credential, a wrong one, another tenant, an action id that is not one
        async with http.get(a.controller) as r:
            assert r.status == 401
        async with http.get(a.controller, headers={"Authorization": "TargetToken wrong-token"}) as r:
            assert r.status == 403
        async with http.get(f"{base}/OTHER/controller/v1/cam-a", headers=a.headers) as r:
            assert r.status == 404
        async with http.get(f"{a.controller}/deploymentBase/0", headers=a.headers) as r:
            assert r.status == 400
        assert await state() == before
        # an unknown controller id with the site token (a GatewayToken) follows devices.allow_unknown
        async with http.get(
            f"{base}/DEFAULT/controller/v1/cam-unknown",
            headers={"Authorization": "GatewayToken the-site-token"},
        ) as r:
            assert r.status == (200 if allow_unknown else 403), await r.text()
        # and the real feedback still works afterwards
        assert await a.feedback(feedback, action, "proceeding", "none") == 200
        assert await a.feedback(feedback, action, "closed", "success", "Update Installed.") == 200
        after = await state()
        assert after["cam-a"] == ("healthy", "1.0.0")
        assert after["cam-b"] == before["cam-b"]


async def test_ddi_is_served_only_when_enabled_and_under_its_tenant(reg: Registry, tmp_path: Path) -> None:
    reg.publish(os.urandom(1000), version="1.0.0")
    for enabled, tenant in ((False, "DEFAULT"), (True, "plant-3")):
        settings = gateway_settings(
            reg, tmp_path / f"data-{enabled}", ddi={"enabled": enabled, "tenant": tenant}
        )
        async with running(settings) as gw, aiohttp.ClientSession() as http:
            base = base_url(gw)
            async with http.get(f"{base}/DEFAULT/controller/v1/cam-1") as r:
                assert r.status == 404
            async with http.get(f"{base}/plant-3/controller/v1/cam-1") as r:
                assert r.status == (200 if enabled else 404)
                if enabled:
                    doc = await r.json()
                    # devices.poll_interval_s 300 s with devices.poll_jitter 0.25, as HH:MM:SS
                    assert "00:03:45" <= doc["config"]["polling"]["sleep"] <= "00:06:15"
                    assert (
                        doc["_links"]["configData"]["href"]
                        == f"{base}/plant-3/controller/v1/cam-1/configData"
                    )


async def test_a_deployment_the_cloud_pauses_is_cancelled_for_the_device_that_had_it_in_progress(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(os.urandom(5000), version="1.0.0")
    settings = gateway_settings(reg, tmp_path / "data", ddi={"enabled": True}, gates=OPEN_FIRST)
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        a = DdiDevice(http, base, "cam-a")
        b = DdiDevice(http, base, "cam-b")
        await until(lambda: gw.store.verified, timeout_s=20, what="the artifact mirrored")
        links = (await a.poll())["_links"]
        status, doc = await a.get_json(links["deploymentBase"]["href"])  # cam-a starts it
        assert status == 200
        action = doc["id"]
        assert (
            await a.feedback(links["deploymentBase"]["href"] + "/feedback", action, "proceeding", "none")
            == 200
        )
        assert "deploymentBase" in (await b.poll())["_links"]  # cam-b only saw the offer
        registry.set_command(reg.root, reg.private_key, "detector@1.0.0", "paused", site=reg.site)
        deadline = asyncio.get_running_loop().time() + 20
        while "cancelAction" not in (links := (await a.poll()).get("_links", {})):
            assert "deploymentBase" in links  # offered until the paused index is in effect
            assert asyncio.get_running_loop().time() < deadline, "no cancelAction after the pause"
            await asyncio.sleep(0.05)  # the device's own period
        cancel = links["cancelAction"]["href"]
        assert cancel.endswith(f"/cancelAction/{action}")
        status, doc = await a.get_json(cancel)
        assert status == 200 and doc == {"id": action, "cancelAction": {"stopId": action}}
        assert "_links" not in await b.poll()  # nothing in progress: simply no longer offered
        assert (
            await a.feedback(cancel + "/feedback", action, "closed", "success", "cancellation acknowledged.")
            == 200
        )
        assert "_links" not in await a.poll()  # acknowledged: nothing offered (held by the cloud)
        status, _ = await a.get_json(cancel)
        assert status == 404


async def test_a_device_that_refuses_the_cancellation_is_asked_once_and_its_result_still_counts(
    reg: Registry, tmp_path: Path
) -> None:
    """rauc-hawkbit-updater, once installing, answers a cancelAction with ``rejected`` and goes on;
    its ``closed`` result must still reach the inventory and the gates (it runs what it installed)."""
    reg.publish(os.urandom(5000), version="1.0.0")
    settings = gateway_settings(reg, tmp_path / "data", ddi={"enabled": True}, gates=OPEN_FIRST)
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        c = DdiDevice(http, base, "cam-c")
        await until(lambda: gw.store.verified, timeout_s=20, what="the artifact mirrored")
        links = (await c.poll())["_links"]
        status, doc = await c.get_json(links["deploymentBase"]["href"])
        assert status == 200
        action, feedback = doc["id"], links["deploymentBase"]["href"] + "/feedback"
        assert await c.feedback(feedback, action, "proceeding", "none", "Installing.") == 200
        registry.set_command(reg.root, reg.private_key, "detector@1.0.0", "paused", site=reg.site)
        deadline = asyncio.get_running_loop().time() + 20
        while "cancelAction" not in (links := (await c.poll()).get("_links", {})):
            assert asyncio.get_running_loop().time() < deadline, "no cancelAction after the pause"
            await asyncio.sleep(0.05)  # the device's own period
        cancel = links["cancelAction"]["href"]
        msg = "Cancelation impossible, installation started already."
        assert await c.feedback(cancel + "/feedback", action, "rejected", "success", msg) == 200
        assert "_links" not in await c.poll()  # asked once
        assert (await c.get_json(cancel))[0] == 404
        assert await c.feedback(feedback, action, "closed", "success", "Software bundle installed.") == 200
        # after an action the device is asked for its attributes again (its firmware may have changed)
        assert "configData" in (await c.poll())["_links"]
        assert "_links" not in await c.poll()
        async with http.get(f"{_operator(gw)}/devices") as r:
            (rec,) = [d for d in (await r.json())["devices"] if d["device_id"] == "cam-c"]
        assert (rec["last_event"], rec["model_version"]) == ("healthy", "1.0.0")
