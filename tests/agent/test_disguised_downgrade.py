"""The disguised downgrade (issue 25): a hostile gateway offers the genuine, cloud-signed
``detector 1.0.0`` file as ``detector 2.0.0``. Its sha256 and detached signature are the cloud's,
so the seed's per-file contract passes; the signed statement (model, version, length, sha256)
does not. Refused by the reference agent and by python-tuf's own client, with the reason, and the
device's current slot unchanged.

The hostile gateway is a small real HTTP server speaking the device API with the manifests the
test chooses and the registry's genuine files.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tuf.api import exceptions as tuf_errors

from gateway.agent.agent import DeviceAgent
from gateway.agent.errors import VerifyError
from tests.conftest import Registry
from tests.registry.tufkit import make_tuf_registry, static_server, updater
from tests.registry.tufkit import run as run_cli


@asynccontextmanager
async def hostile_gateway(root: Path, offer: dict[str, Any]) -> AsyncIterator[str]:
    """Answers every poll with ``offer["manifest"]`` and serves the registry's genuine files."""

    async def updates(_request: web.Request) -> web.Response:
        return web.json_response(offer["manifest"])

    async def files(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["path"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes())

    async def events(request: web.Request) -> web.Response:
        offer.setdefault("events", []).append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/devices/{id}/updates", updates)
    app.router.add_post("/devices/{id}/events", events)
    app.router.add_get("/{path:artifacts/.*}", files)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def disguise(real: dict[str, Any], version: str, *, keep_statement: bool) -> dict[str, Any]:
    """``real``'s file, sha256, signature (and statement) under another version's name."""
    fake = dict(real, version=version)
    if not keep_statement:
        fake.pop("statement")
    return fake


def genuine(manifest: dict[str, Any], base: str) -> dict[str, Any]:
    return dict(manifest, artifact_url=f"{base}/{manifest['artifact_url']}", signature_url=f"{base}/{manifest['signature_url']}")  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_reference_agent_refuses_a_file_signed_for_another_version(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    old = reg.publish(rng.randbytes(rng.randrange(1000, 50_000)), version="1.0.0")
    running = reg.publish(rng.randbytes(rng.randrange(1000, 50_000)), version="1.5.0")
    offer: dict[str, Any] = {}
    async with hostile_gateway(reg.root, offer) as base, aiohttp.ClientSession() as s:
        agent = DeviceAgent(
            base, "dev-1", reg.public_key.read_bytes(), tmp_path / "dev", require_statement=True
        )
        offer["manifest"] = genuine(running, base)
        assert await agent.update_once(s)
        before = await agent.running()
        assert before is not None and before.version == "1.5.0"
        attempts = [
            (disguise(old, "2.0.0", keep_statement=True), "statement signed for detector 1.0.0"),
            (disguise(old, "2.0.0", keep_statement=False), "no signed statement"),
            (old, "lower than the running 1.5.0 and not a signed rollback target"),
        ]
        rng.shuffle(attempts)
        for manifest, reason in attempts:
            offer["manifest"] = genuine(manifest, base)
            agent.etag = None
            with pytest.raises(VerifyError, match=re.escape(reason)):
                await agent.update_once(s)
            assert await agent.running() == before  # the current slot unchanged
            assert offer["events"][-1]["event"] == "failed" and reason in offer["events"][-1]["reason"]
        assert "activated" not in [e["event"] for e in offer["events"][3:]]


async def test_an_agent_without_required_statements_still_refuses_a_mismatched_one(
    reg: Registry, tmp_path: Path
) -> None:
    """Devices that do not insist on statements (old registries) still check one that is there."""
    old = reg.publish(b"one" * 1000, version="1.0.0")
    offer: dict[str, Any] = {}
    async with hostile_gateway(reg.root, offer) as base, aiohttp.ClientSession() as s:
        agent = DeviceAgent(base, "dev-1", reg.public_key.read_bytes(), tmp_path / "dev")
        offer["manifest"] = genuine(disguise(old, "2.0.0", keep_statement=True), base)
        with pytest.raises(VerifyError, match=re.escape("statement signed for detector 1.0.0")):
            await agent.update_once(s)
        assert await agent.running() is None


async def test_python_tuf_refuses_the_old_file_offered_as_the_new_version(tmp_path: Path) -> None:
    """A TUF device asks for 2.0.0's target; the mirror answers with 1.0.0's genuine bytes."""
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    old = treg.publish(b"old model" * 500, "detector", "1.0.0", "a")
    new = treg.publish(b"new model" * 600, "detector", "2.0.0", "a")
    mirror = tmp_path / "hostile-mirror"
    (mirror / "artifacts/detector/2.0.0").mkdir(parents=True)
    (mirror / "metadata").symlink_to(treg.root / "metadata")

    def run() -> None:
        with static_server(mirror) as base:
            device = updater(tmp_path / "device", base + "metadata/", base, treg.first_root)
            info = device.get_targetinfo("artifacts/detector/2.0.0/detector-2.0.0.onnx")
            assert info is not None and json.loads(info.custom["manifest"])["version"] == "2.0.0"
            name = f"{info.hashes['sha256']}.detector-2.0.0.onnx"
            (mirror / "artifacts/detector/2.0.0" / name).write_bytes(old.read_bytes())
            with pytest.raises(tuf_errors.LengthOrHashMismatchError):
                device.download_target(info)
            # And a path of the old file is 1.0.0 by the signed manifest, whatever a gateway claims.
            info_old = device.get_targetinfo("artifacts/detector/1.0.0/detector-1.0.0.onnx")
            assert info_old is not None and json.loads(info_old.custom["manifest"])["version"] == "1.0.0"
        assert new.read_bytes() != old.read_bytes()

    await asyncio.to_thread(run)


async def test_a_signed_rollback_target_is_taken_below_the_running_version(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``registry publish --rollback-target``: the cloud says devices on a higher version may take it."""
    running = reg.publish(b"two" * 1000, version="2.0.0")
    model = tmp_path / "detector-1.0.0.bin"
    model.write_bytes(b"one" * 1000)
    assert run_cli("registry", "publish", str(reg.root), str(model), f"--key={reg.private_key}", "--model-id=detector",
                   "--version=1.0.0", "--site=test-site", "--rollback-target") == 0  # fmt: skip
    capsys.readouterr()
    index = json.loads(reg.index_bytes())["signed"]["deployments"]
    back = next(d for d in index if d["version"] == "1.0.0")
    offer: dict[str, Any] = {}
    async with hostile_gateway(reg.root, offer) as base, aiohttp.ClientSession() as s:
        agent = DeviceAgent(
            base, "dev-1", reg.public_key.read_bytes(), tmp_path / "dev", require_statement=True
        )
        offer["manifest"] = genuine(running, base)
        assert await agent.update_once(s)
        offer["manifest"] = genuine(back, base)
        agent.etag = None
        assert await agent.update_once(s)
        now = await agent.running()
        assert now is not None and now.version == "1.0.0"
