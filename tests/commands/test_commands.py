"""The installer's commands against a running gateway (through its operator API) and offline."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import aiohttp
import pytest

from gateway import cli
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until

MODEL = os.urandom(100_000)
SHA = hashlib.sha256(MODEL).hexdigest()


def write_config(gw: Gateway, path: Path, token: str = "") -> Path:
    host, port = gw.operator_addresses[0][:2]
    path.write_text(
        f'data_dir = "{gw.settings.data_dir}"\nsite = "{gw.settings.site}"\n'
        f'[operator]\nlisten = "{host}:{port}"\ntoken = "{token}"\n'
    )
    return path


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    return code, capsys.readouterr().out


async def supersede(reg: Registry, gw: Gateway) -> tuple[str, str]:
    """Publish 2.0.0 then 3.0.0 over MODEL's 1.0.0, the index keeping one of each: 1.0.0 is then
    neither offered, nor run by a device, nor the rollback target (2.0.0 is, for 3.0.0), so it is
    the one blob a prune may remove. Each is mirrored before the next is published."""
    shas = []
    for version in ("2.0.0", "3.0.0"):
        manifest = reg.publish(os.urandom(50_000), version=version, keep=1)
        await until(lambda m=manifest: gw.store.is_verified(m["sha256"]), what=f"{version} mirrored")
        shas.append(manifest["sha256"])
    return shas[0], shas[1]


async def test_status_and_cache_through_the_running_gateway(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        config = write_config(gw, tmp_path / "gw.toml")
        code, out = await run_cli(capsys, "status", "--config", str(config), "--json")
        status = json.loads(out)
        assert code == 0
        assert status["index"]["version"] == 1
        assert status["deployments"][0]["mirrored"]
        code, out = await run_cli(capsys, "cache", "ls", "--config", str(config), "--json")
        assert code == 0
        assert json.loads(out)["blobs"][0]["sha256"] == SHA
        # Corrupt the blob behind the gateway's back: verify finds and removes it.
        blob = gw.store.blobs.blob_path(SHA)
        blob.chmod(0o644)
        with blob.open("r+b") as f:
            f.write(b"\0" * 16)
        code, out = await run_cli(capsys, "cache", "verify", "--config", str(config), "--json")
        assert code == 0
        assert json.loads(out)["corrupt_removed"] == [SHA]
        await until(lambda: gw.store.is_verified(SHA), what="fetched again after corruption")
        code, out = await run_cli(capsys, "cache", "prune", "--config", str(config), "--json")
        assert code == 0
        assert json.loads(out) == {"removed": []}  # in effect: never pruned
        baseline, current = await supersede(reg, gw)
        code, out = await run_cli(capsys, "cache", "prune", "--config", str(config), "--json")
        assert code == 0
        assert json.loads(out) == {"removed": [SHA]}
        assert not gw.store.is_verified(SHA)
        assert gw.store.is_verified(baseline)  # the rollback target stays
        assert gw.store.is_verified(current)  # the deployment in effect stays


async def test_operator_api_off_loopback_needs_the_token(reg: Registry, tmp_path: Path) -> None:
    settings = gateway_settings(reg, tmp_path / "data", operator={"token": "s3cret-token"})
    async with running(settings) as gw:
        host, port = gw.operator_addresses[0][:2]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{host}:{port}/status") as r:
                assert r.status == 401
            async with s.get(
                f"http://{host}:{port}/status", headers={"Authorization": "Bearer s3cret-token"}
            ) as r:
                assert r.status == 200


async def test_offline_cache_ls_and_prune(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg.publish(MODEL)
    settings = gateway_settings(reg, tmp_path / "data")
    async with running(settings) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        config = write_config(gw, tmp_path / "gw.toml")
        baseline, current = await supersede(reg, gw)
    code, out = await run_cli(capsys, "cache", "ls", "--config", str(config))
    assert code == 0
    assert SHA[:12] in out
    assert "detector/1.0.0" in out
    code, out = await run_cli(capsys, "cache", "prune", "--config", str(config), "--json")
    assert code == 0
    assert json.loads(out) == {"removed": [SHA]}
    code, out = await run_cli(capsys, "cache", "ls", "--config", str(config), "--json")
    assert code == 0
    assert sorted(b["sha256"] for b in json.loads(out)["blobs"]) == sorted([baseline, current])


async def test_dashboard_shows_the_site_at_a_glance(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        host, port = gw.operator_addresses[0][:2]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{host}:{port}/") as r:
                page = await r.text()
            assert r.status == 200
            assert r.content_type == "text/html"
            async with s.get(f"http://{host}:{port}/dashboard/state") as r:
                state = await r.json()
        for part in ("Rollouts", "Devices", "Mirroring", "This box"):
            assert part in page
        assert state["site"] == "test-site"
        assert [m["name"] for m in state["mirroring"]] == ["detector@1.0.0"]
        assert state["mirroring"][0]["text"].startswith("verified")


async def test_gate_controls_confirm_in_one_line_and_refuse_what_would_do_nothing(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings(reg, tmp_path / "data", gates={"approve_each_wave": True})
    async with running(settings) as gw:
        config = write_config(gw, tmp_path / "gw.toml")
        code, out = await run_cli(capsys, "gate", "status", "--config", str(config))
        assert code == 0
        assert out.startswith("no canary gates: no deployment in the signed index has been judged")
        reg.publish(MODEL, version="1.0.0")

        async def gate_listed() -> bool:
            _code, out = await run_cli(capsys, "gate", "status", "--config", str(config))
            return "detector@1.0.0" in out

        deadline = asyncio.get_running_loop().time() + 10
        while not await gate_listed():  # what an operator does: look again
            assert asyncio.get_running_loop().time() < deadline
        ctl = ("--config", str(config), "detector@1.0.0", "--why", "testing", "--who", "ana")
        code, out = await run_cli(capsys, "gate", "approve", *ctl)
        assert code == 1
        assert out == ""  # refused: the wave is not waiting for approval
        code, out = await run_cli(capsys, "gate", "hold", *ctl)
        assert code == 0
        assert out == "hold: detector@1.0.0 is now waves at wave 1, held by operator:ana\n"
        code, out = await run_cli(capsys, "gate", "abort", *ctl)
        assert code == 0
        assert out.startswith("abort: detector@1.0.0 is now aborted")
        code = await asyncio.to_thread(cli.main, ["gate", "release", *ctl])
        err = capsys.readouterr().err
        assert code == 1
        assert "abort is final" in err
        assert err.count("\n") == 1


async def test_commands_that_read_files_say_when_the_gateway_is_stopped(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cache ls`` and ``devices`` on a stopped gateway's folder print what it left, and say on
    stderr that it may be stale (they said nothing); sizes read as everywhere else ("100.0 kB",
    not 100000)."""
    reg.publish(MODEL)
    settings = gateway_settings(reg, tmp_path / "data")
    async with running(settings) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        config = write_config(gw, tmp_path / "gw.toml")
        code = await asyncio.to_thread(cli.main, ["cache", "ls", "--config", str(config)])
        live = capsys.readouterr()
        assert code == 0 and "stale" not in live.err and "100.0 kB" in live.out
    for argv in (["cache", "ls"], ["devices"]):
        code = await asyncio.to_thread(cli.main, [*argv, "--config", str(config)])
        out = capsys.readouterr()
        assert code == 0, out
        assert "no gateway runs on" in out.err and "may be stale" in out.err, (argv, out.err)
        if argv[0] == "cache":
            assert "catalog.json written 20" in out.err  # when the file was last written
            assert "100.0 kB" in out.out and "100000" not in out.out
