"""The signed index and key list this gateway serves to child gateways and devices: a device
credential is needed for them, as for model files, whenever ``devices.access`` is not ``open``."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import aiohttp

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until

MODEL = os.urandom(10_000)
TOKEN = "the-site-token"


async def get(url: str, **kw: object) -> int:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status


async def test_index_and_keys_need_a_device_credential_with_token_access(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    settings = gateway_settings(reg, tmp_path / "data", devices={"access": "token", "site_token": TOKEN})
    async with running(settings) as gw:
        await until(lambda: gw.store.is_verified(hashlib.sha256(MODEL).hexdigest()), what="mirrored")
        base = base_url(gw)
        for path in ("/index.json", f"/sites/{gw.settings.site}/index.json", "/keys.json"):
            assert await get(base + path) == 401, path
            assert await get(base + path, headers={"Authorization": "Bearer not-the-token"}) == 403, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert await get(base + "/index.json", headers=bearer) == 200
        assert await get(f"{base}/sites/{gw.settings.site}/index.json", headers=bearer) == 200
        assert await get(base + "/keys.json", headers=bearer) in (200, 404)  # 404: no key list held
        # A child gateway puts the token in its upstream URL: HTTP Basic, the token as password.
        basic = "Basic " + base64.b64encode(f"child-gw:{TOKEN}".encode()).decode()
        assert await get(base + "/index.json", headers={"Authorization": basic}) == 200
        assert gw.stats["downloads.refused_401"] == 3


async def test_open_access_serves_them_without_credentials(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.mirror.index is not None, what="an index")
        assert await get(base_url(gw) + "/index.json") == 200
