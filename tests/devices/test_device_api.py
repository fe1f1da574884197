"""The device API on a real gateway: polls, long polls, events, access, bad input, upstream silence."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until
from tests.mirror.hostile import Hostile

MODEL = os.urandom(50_000)
SHA = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
async def gw(reg: Registry, hostile: Hostile, tmp_path: Path) -> AsyncIterator[Gateway]:
    reg.publish(MODEL, min_firmware="1.0.0")
    # The cloud's rules alone (a first version goes to everyone): the gates have their own tests.
    settings = gateway_settings(reg, tmp_path / "data", upstream=hostile.url, gates=OPEN_FIRST)
    async with running(settings) as g:
        await until(lambda: g.store.is_verified(SHA), what="mirrored")
        yield g


async def poll(
    gw: Gateway, device: str, query: str = "", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base_url(gw)}/devices/{device}/updates{query}", headers=headers) as r,
    ):
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def post(gw: Gateway, path: str, body: bytes, **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(base_url(gw) + path, data=io.BytesIO(body), headers=headers) as r,
    ):
        return r.status, await r.text()


async def test_poll_answers_200_then_304_then_204_when_up_to_date(gw: Gateway) -> None:
    status, headers, body = await poll(gw, "cam-1", "?fw=1.2.0&hw=rev2")
    assert status == 200
    manifest = json.loads(body)
    assert manifest["sha256"] == SHA
    assert manifest["version"] == "1.0.0"
    assert manifest["artifact_url"] == f"{base_url(gw)}/artifacts/detector/1.0.0/detector-1.0.0.bin"
    assert manifest["signature_url"] == manifest["artifact_url"] + ".sig"
    interval = gw.settings.devices.poll_interval_s
    assert interval * 0.5 <= int(headers["retry-after"]) <= interval * 1.5
    status, _, _ = await poll(gw, "cam-1", "?fw=1.2.0&hw=rev2", **{"If-None-Match": headers["etag"]})
    assert status == 304
    status, headers, _ = await poll(gw, "cam-1", "?fw=1.2.0&hw=rev2&model_id=detector&model_version=1.0.0")
    assert status == 204
    assert headers["x-ota-reason"] == "up_to_date"
    rec = gw.inventory.get("cam-1")
    assert rec is not None
    assert rec.attrs["hw"] == "rev2"
    assert rec.model_version == "1.0.0"
    assert "poll" in rec.sources


async def test_firmware_too_old_is_204_and_blocked(gw: Gateway) -> None:
    status, headers, _ = await poll(gw, "old-1", "?fw=0.9.0")
    assert status == 204
    assert headers["x-ota-reason"] == "firmware_too_old"


async def test_long_poll_answers_when_a_deployment_lands(gw: Gateway, reg: Registry) -> None:
    status, _headers, _ = await poll(gw, "cam-2", "?fw=1.2.0&model_id=detector&model_version=1.0.0")
    assert status == 204
    waiting = asyncio.create_task(
        poll(gw, "cam-2", "?fw=1.2.0&model_id=detector&model_version=1.0.0&wait=20")
    )
    await asyncio.sleep(0)
    newer = os.urandom(40_000)
    await asyncio.to_thread(reg.publish, newer, version="1.1.0")
    status, _, body = await asyncio.wait_for(waiting, 15)
    assert status == 200
    assert json.loads(body)["version"] == "1.1.0"


async def test_polls_never_reach_the_upstream(gw: Gateway, hostile: Hostile) -> None:
    before = len(hostile.log)
    await asyncio.gather(*(poll(gw, f"dev-{i}", "?fw=1.5.0") for i in range(200)))
    # Only the mirror's own interval polls may have happened meanwhile: no per-device traffic.
    after = [path for path, _ in hostile.log[before:]]
    assert all(p.endswith(("index.json", "keys.json")) for p in after)
    assert len(after) <= 10


async def test_events_update_the_inventory(gw: Gateway) -> None:
    body = json.dumps({"event": "activated", "model_id": "detector", "version": "1.0.0"}).encode()
    status, text = await post(gw, "/devices/cam-3/events", body, **{"Content-Type": "application/json"})
    assert status == 200 and json.loads(text) == {"accepted": 1}  # the reference emitter wants a 200
    rec = gw.inventory.get("cam-3")
    assert rec is not None
    assert rec.last_event == "activated"
    assert rec.model_version == "1.0.0"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/devices/cam-4/events", b"{not json", "expected a JSON object"),
        ("/devices/cam-4/events", b"[1, 2]", "expected a JSON object"),
        ("/devices/cam-4/events", b'{"event": "exploded"}', "event: one of"),
        ("/devices/cam-4/events", b'{"event": "failed", "version": "../x"}', "version:"),
        ("/devices/cam-4/events", b'{"event": "failed", "reason": 5}', "reason:"),
        ("/devices/.hidden/events", b'{"event": "failed"}', "device id"),
    ],
)
async def test_bad_event_bodies_are_400_with_a_reason(
    gw: Gateway, path: str, body: bytes, expected: str
) -> None:
    status, text = await post(gw, path, body, **{"Content-Type": "application/json"})
    assert status == 400
    assert expected in text


async def test_bad_poll_parameters_are_400(gw: Gateway) -> None:
    for query, expected in (
        ("?wait=soon", "wait:"),
        ("?wait=-1", "wait:"),
        ("?wait=nan", "wait:"),
        ("?" + "&".join(f"k{i}=v" for i in range(40)), "at most"),
        ("?hw=" + "x" * 500, "hw:"),
        ("?9bad=1", "query parameter"),
        ("?model_version=../../x", "model_version"),
    ):
        status, _, body = await poll(gw, "cam-5", query)
        assert status == 400 and expected in body.decode(), (query, body)


async def test_oversized_body_is_refused_early(gw: Gateway) -> None:
    status, _ = await post(gw, "/devices/cam-6/events", b"x" * (gw.settings.http.max_body_bytes + 1))
    assert status == 413


async def test_token_access_for_polls_and_downloads(reg: Registry, hostile: Hostile, tmp_path: Path) -> None:
    reg.publish(MODEL)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"cam-1": "token-of-cam-1"}))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        upstream=hostile.url,
        devices={"access": "token", "tokens_file": str(tokens), "allow_unknown": False},
        gates=OPEN_FIRST,
    )
    async with running(settings) as g:
        await until(lambda: g.store.is_verified(SHA), what="mirrored")
        status, _, body = await poll(g, "cam-1")
        assert status == 401
        assert b"Bearer" in body
        status, _, body = await poll(g, "cam-1", Authorization="Bearer wrong-token-x")
        assert status == 403
        assert b"wrong token" in body
        status, _, body = await poll(g, "cam-2", Authorization="Bearer token-of-cam-1")
        assert status == 403
        assert b"not known" in body
        status, _, body = await poll(g, "cam-1", Authorization="Bearer token-of-cam-1")
        assert status == 200
        url = json.loads(body)["artifact_url"]
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 401  # model files are company property
            async with s.get(url, headers={"Authorization": "Bearer token-of-cam-1"}) as r:
                assert r.status == 200
                assert await r.read() == MODEL
