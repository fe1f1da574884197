"""The clock floor through the real gateway: an index from the future, a poisoned floor, recovery.

Acts through the outside only: the registry folder (the cloud), the operator API's ``/status``,
the ``ota-gateway trust`` commands, the files under the data folder, and a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import cli
from gateway.runtime import atomic
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running

YEAR = 365 * 86400.0


async def status(gw: Gateway) -> dict[str, Any]:
    host, port = gw.operator_addresses[0][:2]
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/status") as r:
        assert r.status == 200
        return dict(await r.json())


async def index_version(gw: Gateway, version: int, what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        st = await status(gw)
        if st["index"] is not None and st["index"]["version"] == version:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status: {st['index']} {st['last_errors']}")
        await asyncio.sleep(0.05)  # polling a condition with a deadline


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


def write_config(gw: Gateway, path: Path) -> Path:
    path.write_text(f'data_dir = "{gw.settings.data_dir}"\nsite = "{gw.settings.site}"\n')
    return path


async def test_index_from_the_future_is_refused_and_the_site_keeps_moving(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings(reg, tmp_path / "data")
    reg.publish(b"one", version="1.0.0")  # index version 1
    async with running(settings) as gw:
        await index_version(gw, 1, "the first index")
        # A cloud whose clock ran ten years ahead signs index version 2.
        reg.publish(b"future", version="2.0.0", now=time.time() + 10 * YEAR)
        deadline = time.monotonic() + 15
        while "ahead of the trusted local clock" not in (await status(gw))["last_errors"].get(
            "mirror.rejected_indexes", ""
        ):
            assert time.monotonic() < deadline, "the future index was never refused"
            await asyncio.sleep(0.05)
        st = await status(gw)
        assert st["index"]["version"] == 1 and st["clock"]["trusted"]
        assert "trust.max_future_skew_s" in st["last_errors"]["mirror.rejected_indexes"]
        # The cloud fixes its clock and goes on: the next normally issued indexes are taken.
        reg.publish(b"three", version="3.0.0")  # index version 3
        await index_version(gw, 3, "a normal index after the future one")
        code, out, _ = await run_cli(capsys, "trust", "status", "--config", str(write_config(gw, tmp_path / "gw.toml")), "--json")  # fmt: skip
        floor = json.loads(out)
        assert code == 0 and floor["clock_trusted"] and floor["gateway_running"]
        # Raised by a normal index (1 or 3: both may be issued within the same second), never by 2.
        assert floor["source"]["kind"] == "index" and floor["source"]["version"] in (1, 3)
        assert floor["floor_s"] <= time.time() + 1
    async with running(settings) as gw:  # across a restart
        await index_version(gw, 3, "the held index after a restart")
        assert (await status(gw))["clock"]["trusted"]
        reg.publish(b"four", version="4.0.0")
        await index_version(gw, 4, "a new index after the restart")


async def test_poisoned_floor_is_named_and_reset_floor_recovers(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A floor left ten years ahead by the old bug (a ``state.json`` without a source)."""
    data = tmp_path / "data"
    settings = gateway_settings(reg, data)
    atomic.write_json(
        data / "trust" / "state.json", {"highest_version": 0, "highest_issued": time.time() + 10 * YEAR}
    )
    reg.publish(b"one", version="1.0.0")
    async with running(settings) as gw:
        config = write_config(gw, tmp_path / "gw.toml")
        deadline = time.monotonic() + 15
        while "expired" not in (await status(gw))["last_errors"].get("mirror.rejected_indexes", ""):
            assert time.monotonic() < deadline, "expected the poisoned floor to refuse a normal index"
            await asyncio.sleep(0.05)
        st = await status(gw)
        assert st["index"] is None and not st["clock"]["trusted"]
        assert "reset-floor" in st["clock"]["note"] and st["clock"]["floor_source"] == {"kind": "unknown"}
        code, out, _ = await run_cli(capsys, "trust", "status", "--config", str(config))
        assert code == 0 and "NOT trusted" in out and "reset-floor" in out and "unknown" in out
        # While the gateway runs, reset-floor refuses with one line and changes nothing.
        code, out, err = await run_cli(capsys, "trust", "reset-floor", "--config", str(config), "--why", "x")
        assert code == 1 and len(err.strip().splitlines()) == 1 and "stop it first" in err
        assert not (data / "trust" / "audit.jsonl").exists()
    code, out, _ = await run_cli(
        capsys, "trust", "reset-floor", "--config", str(config), "--why", "cloud clock bug, checked NTP", "--who", "ana"
    )  # fmt: skip
    assert code == 0 and "reset from" in out
    (record,) = [json.loads(line) for line in (data / "trust" / "audit.jsonl").read_text().splitlines()]
    assert record["who"] == "ana" and record["why"] == "cloud clock bug, checked NTP"
    assert record["floor_before"].startswith(str(time.gmtime().tm_year + 10)[:3])
    code, out, _ = await run_cli(capsys, "trust", "status", "--config", str(config), "--json")
    floor = json.loads(out)
    assert floor["clock_trusted"] and floor["source"]["kind"] == "reset" and floor["source"]["who"] == "ana"
    async with running(settings) as gw:
        await index_version(gw, 1, "the index refused before the reset")
        reg.publish(b"two", version="2.0.0")
        await index_version(gw, 2, "the next index")
