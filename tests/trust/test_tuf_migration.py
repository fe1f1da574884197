"""Migration (issue 25): ``registry migrate`` writes a TUF repository beside an existing registry,
and a site moved from ``trust.format = "index"`` to ``"tuf"`` goes on without a device noticing:
the same poll answer (304 on the ETag it holds), no artifact fetched again, no gate reset.

Real gateway processes in turn on one data folder; the registry is served over HTTP by a server
that counts what each path costs, so "not fetched again" is measured at the upstream.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Registry
from tests.peers import free_port
from tests.registry.tufkit import TufRegistry, run
from tests.trust.tuf_kit import GatewayProcess, lying_upstream, tuf_gateway

POLL = "/devices/cam-1/updates?model_id=detector&hw=rev2"


async def poll(gw: GatewayProcess, etag: str | None = None) -> tuple[int, str | None, Any]:
    headers = {"If-None-Match": etag} if etag else {}
    async with aiohttp.ClientSession() as s, s.get(gw.http + POLL, headers=headers) as r:
        body = await r.json() if r.status == 200 else None
        return r.status, r.headers.get("ETag"), body


async def gates(gw: GatewayProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(gw.operator + "/gates") as r:
        doc = await r.json()
        return {k: v for k, v in doc["gates"].items()} if isinstance(doc["gates"], dict) else doc["gates"]


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_site_moves_from_index_to_tuf_without_a_device_noticing(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(50_000, 400_000))
    reg.publish(data, version="1.0.0", cohort="hw:rev2")
    reg.publish(rng.randbytes(20_000), model_id="counter", version="2.1.0")
    treg = TufRegistry(reg.root, tmp_path / "tuf-keys", tmp_path / "model-keys")
    artifact = "artifacts/detector/1.0.0/detector-1.0.0.bin"
    legacy_env = {
        "OTA_GATEWAY_TRUST__FORMAT": "index",
        "OTA_GATEWAY_TRUST__TRUSTED_KEYS": f'["{reg.public_key}"]',
    }
    port = free_port()  # the site's device port, the same before and after (devices hold its URLs)
    async with lying_upstream(reg.root) as up:
        async with tuf_gateway(treg, tmp_path / "data", up.url, env=legacy_env, http_port=port) as gw:
            await gw.until(lambda s: s["index"] is not None, "the legacy index")
            await gw.until(
                lambda s: s["counters"].get("mirror.artifacts_verified", 0) >= 2, "both models", 60
            )
            status, etag, manifest = await poll(gw)
            assert status == 200 and manifest["version"] == "1.0.0"
            gates_before = await gates(gw)
        fetched = up.requests[artifact]
        assert fetched >= 1
        # The cloud publishes both formats; this site is moved to TUF.
        assert (
            run("registry", "migrate", str(reg.root), f"--keys={treg.keys}", f"--key={reg.private_key}") == 0
        )
        assert json.loads((reg.root / "metadata" / "1.root.json").read_bytes())["signed"]["_type"] == "root"
        async with tuf_gateway(treg, tmp_path / "data", up.url, http_port=port) as gw:
            ts = json.loads((reg.root / "metadata" / "timestamp.json").read_bytes())["signed"]["version"]
            await gw.until(lambda s: s["index"] is not None and s["index"]["version"] == ts, "the TUF set")
            again = await poll(gw, etag)
            assert again[0] == 304, again  # the device's answer did not change
            assert await poll(gw) == (status, etag, manifest)
            assert await gates(gw) == gates_before
            assert "mirror.rejected_indexes" not in (await gw.status())["last_errors"]
            assert (await gw.get("/" + artifact)) == (200, data)
        assert up.requests[artifact] == fetched  # not fetched again
        assert up.requests["metadata/timestamp.json"] >= 1
