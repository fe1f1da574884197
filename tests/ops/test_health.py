"""``/healthz`` and ``/readyz`` on a real gateway, on both ports; the readiness rules as a table.

Not ready, with the reason in the JSON: before any index, once the index expired, with a clock
earlier than the trusted floor; ready once a signed index is accepted. The operator port's probes
need the operator token when one is set; the device port's need no device credential.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.core.readiness import ReadinessFacts, not_ready
from gateway.ops.readiness import store_problem
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until

TOKEN = "operator-token-for-probes"
FUTURE = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))


def operator_url(gw: Gateway) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"http://{host}:{port}"


async def get(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        text = await r.text()
        return r.status, json.loads(text) if r.content_type == "application/json" else text


async def test_ready_once_a_signed_index_is_accepted(reg: Registry, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"cam-1": "token-of-cam-1"}))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        operator={"listen": "127.0.0.1:0", "token": TOKEN},
        devices={"access": "token", "tokens_file": str(tokens)},
    )
    async with running(settings) as gw:
        device, op = base_url(gw), operator_url(gw)
        assert await get(f"{device}/healthz") == (200, {"ok": True, "site": "test-site"})
        status, body = await get(f"{device}/readyz")  # no device credential needed
        assert status == 503 and body == {"ready": False, "reasons": ["no signed index accepted yet"]}
        assert (await get(f"{op}/readyz"))[0] == 401  # the operator port wants its token
        assert (await get(f"{op}/healthz", Authorization=f"Bearer {TOKEN}"))[0] == 200
        reg.publish(b"a model " * 100)

        async def ready() -> bool:
            return (await get(f"{op}/readyz", Authorization=f"Bearer {TOKEN}")) == (
                200,
                {"ready": True, "reasons": []},
            )

        deadline = time.monotonic() + 20
        while not await ready():
            assert time.monotonic() < deadline, await get(f"{device}/readyz")
        assert (await get(f"{device}/readyz"))[0] == 200


async def test_not_ready_once_the_index_expired(reg: Registry, tmp_path: Path) -> None:
    reg.publish(b"a model " * 100, expires_s=3)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.mirror.index is not None, what="the short-lived index accepted")
        deadline = time.monotonic() + 20
        while True:
            status, body = await get(f"{base_url(gw)}/readyz")
            if status == 503 and any("expired" in r for r in body["reasons"]):
                break
            assert status == 200 and time.monotonic() < deadline, body
        assert body["ready"] is False


async def test_not_ready_while_the_clock_is_behind_the_floor(reg: Registry, tmp_path: Path) -> None:
    reg.publish(b"a model " * 100)
    settings = gateway_settings(reg, tmp_path / "data", trust={"min_valid_time": FUTURE})
    async with running(settings) as gw:
        status, body = await get(f"{base_url(gw)}/readyz")
        assert status == 503
        assert any(r.startswith("clock not trusted") for r in body["reasons"]), body


def test_a_store_that_cannot_write_is_a_reason(tmp_path: Path) -> None:
    assert store_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is removed
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    problem = store_problem(not_a_folder)
    assert problem is not None and str(not_a_folder) in problem


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (ReadinessFacts(3, 200.0, 100.0, True, None), ()),
        (ReadinessFacts(None, None, 100.0, True, None), ("no signed index accepted yet",)),
        (ReadinessFacts(3, 100.0, 100.0, True, None), ("index version 3 expired",)),
        (ReadinessFacts(3, 200.0, 100.0, False, None), ("clock not trusted",)),
        (ReadinessFacts(3, 200.0, 100.0, True, "/data: Read-only file system"), ("store not writable",)),
        (ReadinessFacts(3, 200.0, 100.0, True, None, ("mqtt",)), ("mqtt listener not up",)),
        (
            ReadinessFacts(None, None, 100.0, False, "full", ("device http", "operator")),
            ("no signed", "clock not", "store not", "device http listener", "operator listener"),
        ),
    ],
)
def test_readiness_rules(facts: ReadinessFacts, expected: tuple[str, ...]) -> None:
    reasons = not_ready(facts)
    assert len(reasons) == len(expected)
    assert all(r.startswith(e) for r, e in zip(reasons, expected, strict=True)), reasons
