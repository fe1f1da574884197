"""``/status``'s ``health.connections`` comes from the gateway's own listeners' counts (the HTTP
listeners' guards and the broker's), not from psutil's reading of the box's whole TCP table (6 % of
the gateway's CPU at 20,000 connections). A real gateway on ephemeral loopback ports; real sockets
opened and closed against its device listener."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import gateway_settings, running, until


async def connections(session: aiohttp.ClientSession, operator: str) -> Any:
    async with session.get(f"http://{operator}/status") as r:
        assert r.status == 200
        return (await r.json())["health"]["connections"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_status_counts_the_listeners_connections(reg: Registry, tmp_path: Path, seed: int) -> None:
    n = random.Random(seed).randint(3, 12)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        host, port = gw.http_addresses[0][:2]
        ohost, oport = gw.operator_addresses[0][:2]
        operator = f"{ohost}:{oport}"
        async with aiohttp.ClientSession() as session:
            assert await connections(session, operator) == 1  # the /status request itself
            opened = [await asyncio.open_connection(host, port) for _ in range(n)]
            await until(lambda: sum(g.live for g in gw.http_guards) == n + 1, what="accepted")
            assert await connections(session, operator) == n + 1
            for _reader, writer in opened:
                writer.close()
                await writer.wait_closed()
            await until(lambda: sum(g.live for g in gw.http_guards) == 1, what="closed")
            assert await connections(session, operator) == 1
