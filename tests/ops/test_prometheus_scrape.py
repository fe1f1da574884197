"""Debian's Prometheus scrapes a real gateway's ``/metrics``, with the operator token as its bearer.

Prometheus runs on a free port with its own storage folder and a 1 s scrape interval; the test asks
its HTTP API for ``up{job="ota-gateway"}`` and for a gateway figure until both answer (deadline).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import free_port, need

pytestmark = pytest.mark.peer
TOKEN = "operator-token-for-prometheus"
CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ota-gateway
    authorization:
      type: Bearer
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    reg.publish(b"model bytes " * 1000)
    settings = gateway_settings(reg, tmp_path / "data", operator={"listen": "127.0.0.1:0", "token": TOKEN})
    async with running(settings) as g:
        await until(lambda: g.mirror.index is not None, what="the index accepted")
        yield g


async def query(s: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    try:
        async with s.get(f"{base}/api/v1/query", params={"query": promql}) as r:
            if r.status != 200:
                return []
            doc = await r.json()
    except aiohttp.ClientError:  # not listening yet
        return []
    return list(doc["data"]["result"])


async def test_prometheus_scrapes_the_gateway(gw: Gateway, tmp_path: Path) -> None:
    binary = need("prometheus")
    operator_port = gw.operator_addresses[0][1]
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(token=TOKEN, port=operator_port))
    web = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *[
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 60
            up: list[dict[str, Any]] = []
            version: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not (up and version):
                assert proc.returncode is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                up = await query(s, base, 'up{job="ota-gateway"} == 1')
                version = await query(s, base, 'ota_gateway_index_version{job="ota-gateway"}')
                await asyncio.sleep(0.2)  # polling Prometheus' API with a deadline
            assert up, (
                "Prometheus never scraped the gateway: " + (tmp_path / "prometheus.log").read_text()[-2000:]
            )
            assert float(up[0]["value"][1]) == 1
            assert version and float(version[0]["value"][1]) == gw.mirror.index.version
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
