"""Fuzz the DDI endpoints of a real gateway from outside: seeded random hostile requests (ids,
action ids, methods, credentials, feedback and configData bodies mutated from suricatta's own).
Every answer is below 500 and nothing is logged as an error; afterwards the device's real update
still goes through. (What a bad body must not change is checked exactly in
``tests/http_api/test_ddi.py``: here some random requests are valid ones.)"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from tests.conftest import Registry
from tests.ddi_client import DdiDevice, feedback_body
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until

TOKENS = {"cam-1": "token-of-cam-1", "cam-2": "token-of-cam-2"}
REQUESTS = 400


def junk(rng: random.Random, depth: int = 0) -> Any:
    kinds: list[Any] = [
        None,
        True,
        -1,
        2**70,
        1.5e308,
        "",
        "closed",
        "x" * rng.choice([1, 200, 5000]),
        "\x00\ud800",
    ]
    if depth < 3:
        kinds += [[junk(rng, depth + 1)], {rng.choice(["id", "status", "data", "k"]): junk(rng, depth + 1)}]
    return rng.choice(kinds)


def mutated(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key in rng.sample(sorted(doc), k=rng.randint(0, len(doc))):
        op = rng.choice(["drop", "junk", "nested"])
        if op == "drop":
            out.pop(key)
        elif op == "junk":
            out[key] = junk(rng)
        elif isinstance(doc[key], dict):
            out[key] = mutated(rng, doc[key])
    if rng.random() < 0.2:
        out[rng.choice(["x", "id", "mode"])] = junk(rng)
    return out


def body(rng: random.Random, action: str) -> bytes:
    pick = rng.random()
    if pick < 0.4:
        fb = feedback_body(
            action,
            rng.choice(["closed", "proceeding", "canceled"]),
            rng.choice(["success", "failure", "none"]),
        )
        return json.dumps(mutated(rng, fb), allow_nan=True).encode(errors="surrogatepass")
    if pick < 0.7:
        cd = {"data": {"hw": "rev2", "fw": "1.0.0"}, "mode": "merge", "id": ""}
        return json.dumps(mutated(rng, cd)).encode(errors="surrogatepass")
    if pick < 0.8:
        return b"[" * 5000 + b"]" * 5000
    return os.urandom(rng.randint(0, 64))


def request(rng: random.Random, action: str) -> tuple[str, str, dict[str, str], bytes | None]:
    dev = rng.choice(["cam-1", "cam-1", "cam-2", "..", ".x", "a" * 200, "cam-1\n", "%00", "ü"])
    a = rng.choice(
        [action, action, "0", "-1", "2147483648", "9" * 30, "abc", "1.5", str(rng.getrandbits(31))]
    )
    suffix = rng.choice(
        ["", f"/deploymentBase/{a}", f"/deploymentBase/{a}/feedback", f"/cancelAction/{a}", f"/cancelAction/{a}/feedback",
         "/configData", f"/softwaremodules/{a}/artifacts/detector-1.0.0.bin.MD5SUM", f"/softwaremodules/{a}/artifacts/x.MD5SUM",
         "/installedBase/1", "/deploymentBase/", "/x"]
    )  # fmt: skip
    tenant = rng.choice(["DEFAULT"] * 8 + ["default", "OTHER", ".."])
    path = f"/{tenant}/controller/v1/{quote(dev, safe='')}{suffix}"
    natural = "POST" if suffix.endswith("/feedback") else "PUT" if suffix == "/configData" else "GET"
    method = natural if rng.random() < 0.8 else rng.choice(["GET", "POST", "PUT", "HEAD", "DELETE"])
    auth = rng.choice(
        ["TargetToken token-of-cam-1"] * 4
        + ["TargetToken token-of-cam-2", "GatewayToken token-of-cam-1", "Bearer token-of-cam-1", "TargetToken ",
           "targettoken token-of-cam-1", "Basic dG9rLTE=", "", "TargetToken token-of-cam-1 extra"]
    )  # fmt: skip
    headers = {"Authorization": auth} if auth else {}
    if rng.random() < 0.5:
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", "x"])
    data = body(rng, action) if method in ("POST", "PUT") or rng.random() < 0.1 else None
    return method, path, headers, data


@pytest.mark.parametrize("seed", [1, 28, 4242])
async def test_hostile_ddi_requests_get_4xx_and_the_device_still_updates(
    reg: Registry, tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    model = os.urandom(4000)
    reg.publish(model, version="1.0.0")
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tmp_path / "tokens.json")},
        ddi={"enabled": True},
        gates=OPEN_FIRST,
    )
    caplog.set_level(logging.ERROR)
    async with running(settings) as gw, aiohttp.ClientSession() as http:
        base = base_url(gw)
        await until(lambda: gw.store.verified, timeout_s=20, what="the model mirrored")
        dev = DdiDevice(http, base, "cam-1", TOKENS["cam-1"], attrs={"hw": "rev2"})
        href = (await dev.poll())["_links"]["deploymentBase"]["href"]
        action = href.rsplit("/", 1)[1]
        seen: dict[int, int] = {}
        for _ in range(REQUESTS):
            method, path, headers, data = request(rng, action)
            url = yarl.URL(base + path, encoded=True)
            async with http.request(method, url, headers=headers, data=data, allow_redirects=False) as r:
                await r.read()
                seen[r.status] = seen.get(r.status, 0) + 1
                assert r.status < 500, (method, path, headers, data and data[:80], r.status)
        assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(seen) > 3  # the requests reached many answers, not only one refusal
        # the real device still updates (a random request may have been a valid report of it already)
        async with http.get(
            f"http://{gw.operator_addresses[0][0]}:{gw.operator_addresses[0][1]}/devices"
        ) as r:
            before = {d["device_id"]: d for d in (await r.json())["devices"]}.get("cam-1", {})
        assert before.get("model_version") in (None, "1.0.0")
        status, doc = await dev.get_json(href)
        if status == 200:
            assert await dev.download(doc) == model
            assert await dev.feedback(href + "/feedback", action, "closed", "success") == 200
        async with http.get(
            f"http://{gw.operator_addresses[0][0]}:{gw.operator_addresses[0][1]}/devices"
        ) as r:
            after = {d["device_id"]: d for d in (await r.json())["devices"]}
        assert after["cam-1"]["model_version"] == "1.0.0"
