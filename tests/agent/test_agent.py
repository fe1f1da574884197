"""The supported device agent (``gateway.agent``) against a real ``ota-gateway serve`` process:

- a download cut off resumes with ``Range``/``If-Range`` (within one cycle, and from what a crashed
  agent left on disk), then sha256 and signature are checked and the slots switch;
- bytes that do not match what the cloud signed are never made current;
- a bad candidate's halt makes the agent go back: to the previous stable version's manifest
  (``"rollback": true``, switched to from the other slot without a download), and to
  the previous slot on ``204 rollback_previous_slot`` (a halted first version);
- its command lines answer ``--help``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from gateway.agent.agent import DeviceAgent
from gateway.agent.errors import VerifyError
from gateway.agent.simulate import BURNS_CPU, HEALTHY, SimulatedInference
from gateway.agent.slots import Slots
from gateway.agent.transfer import download
from tests.conftest import Registry
from tests.gw import until
from tests.peers import ROOT, free_port, gateway_process, serve_args, stop, wait_port

FAST = {
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.2",
    "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1.0",
    "OTA_GATEWAY_DEVICES__POLL_INTERVAL_S": "1",
    "OTA_GATEWAY_GATES__MIN_SAMPLES": "2",
    "OTA_GATEWAY_GATES__SOAK_MIN_S": "120",
}
OPEN_FIRST = {**FAST, "OTA_GATEWAY_GATES__FIRST_VERSION": "open"}
HEALTH = {"max_cpu_percent": 50.0}


@contextmanager
def gateway(reg: Registry, data: Path, env: dict[str, str]) -> Iterator[SimpleNamespace]:
    http, mqtt = free_port(), free_port()
    args = serve_args(data, str(reg.root), http, site=reg.site, trusted_key=reg.public_key, mqtt_port=mqtt)
    operator = args[args.index("--operator") + 1]
    proc = gateway_process(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(http, 20)
        yield SimpleNamespace(url=f"http://127.0.0.1:{http}", mqtt=("127.0.0.1", mqtt), operator=operator)
    finally:
        stop(proc)


async def operator(gw: SimpleNamespace, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"http://{gw.operator}{path}") as r:
        assert r.status == 200
        return await r.json()


async def inventory(gw: SimpleNamespace, device: str) -> dict[str, Any]:
    return next(d for d in (await operator(gw, "/devices"))["devices"] if d["device_id"] == device)


@asynccontextmanager
async def traced() -> AsyncIterator[tuple[aiohttp.ClientSession, list[tuple[str, str, int]]]]:
    """A session that records (url, Range asked, status) of every request."""
    seen: list[tuple[str, str, int]] = []

    async def on_end(_s: Any, _c: Any, p: aiohttp.TraceRequestEndParams) -> None:
        seen.append((str(p.url), p.headers.get("Range", ""), p.response.status))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as s:
        yield s, seen


async def first_manifest(agent: DeviceAgent, s: aiohttp.ClientSession) -> dict[str, Any]:
    async def offered() -> dict[str, Any] | None:
        status, body, _ = await agent.poll(s)
        return body if status == 200 else None

    for _ in range(200):
        if (body := await offered()) is not None:
            return body
        await asyncio.sleep(0.1)  # polling a condition (mirrored and offered) with a deadline
    raise AssertionError("the gateway never offered the model")


async def test_an_interrupted_download_resumes_then_verifies_and_switches_slots(
    reg: Registry, tmp_path: Path
) -> None:
    model = os.urandom(1_500_000)
    reg.publish(model, version="1.0.0")
    pem = reg.public_key.read_bytes()
    with gateway(reg, tmp_path / "data", OPEN_FIRST) as gw:
        async with traced() as (s, seen):
            agent = DeviceAgent(
                gw.url, "cam-1", pem, tmp_path / "cam-1", attrs={"hw": "rev2"}, model_id="detector"
            )
            manifest = await first_manifest(agent, s)
            assert await agent.update_once(s, interrupt_after=400_000)
            slots = await agent.slots()
            assert slots.current_name() == "b" and slots.model_path("b").read_bytes() == model
            assert agent.events == ["downloaded", "verified", "activated", "healthy"]
            gets = [(rng, st) for url, rng, st in seen if url == manifest["artifact_url"]]
            assert gets[0] == ("", 200) and gets[1][1] == 206 and int(gets[1][0][6:-1]) >= 400_000
            assert not await agent.update_once(s)  # up to date: nothing to do
            rec = await inventory(gw, "cam-1")
            assert rec["model_version"] == "1.0.0" and rec["last_event"] == "healthy"

            # A crash mid-transfer leaves a partial in the inactive slot; a new agent resumes it.
            reg.publish(os.urandom(900_000), version="1.1.0")
            second = DeviceAgent(gw.url, "cam-1", pem, tmp_path / "cam-1", attrs={"hw": "rev2"})
            m2 = await first_manifest(second, s)
            partial, etag = slots.prepare(m2["sha256"])

            async def keep(value: str) -> None:
                slots.remember_etag(m2["sha256"], value)

            assert not await download(
                s,
                m2["artifact_url"],
                partial,
                length=m2["length"],
                etag=etag,
                headers={},
                on_etag=keep,
                stop_after=300_000,
            )
            seen.clear()
            assert await second.update_once(s)
            ranges = [rng for url, rng, st in seen if url == m2["artifact_url"] and st == 206]
            assert len(ranges) == 1 and int(ranges[0][6:-1]) >= 300_000
            assert (await second.running()).version == "1.1.0"  # type: ignore[union-attr]
            assert slots.current_name() == "a" and slots.previous().version == "1.0.0"  # type: ignore[union-attr]


async def test_bytes_the_cloud_did_not_sign_are_never_made_current(
    make_registry: Any, reg: Registry, tmp_path: Path
) -> None:
    other = make_registry("other")  # the agent trusts another cloud's key
    reg.publish(os.urandom(50_000), version="1.0.0")
    with gateway(reg, tmp_path / "data", OPEN_FIRST) as gw:
        async with aiohttp.ClientSession() as s:
            agent = DeviceAgent(
                gw.url, "cam-2", other.public_key.read_bytes(), tmp_path / "cam-2", model_id="detector"
            )
            await first_manifest(agent, s)
            # The manifest's signed statement is checked first (gateway.agent.statement): refused
            # before any byte is downloaded; a manifest without one fails on the file's signature.
            with pytest.raises(VerifyError, match="not signed by the cloud's key"):
                await agent.update_once(s)
            assert agent.events == ["failed"] and await agent.running() is None
            assert (await inventory(gw, "cam-2"))["last_event"] == "failed"
            assert not await agent.update_once(s)  # the refused manifest is not fetched again (304)


async def run_until(agent: DeviceAgent, cond: Any, what: str) -> None:
    """The agent's own loop until ``cond`` holds."""
    halt = asyncio.Event()
    task = asyncio.create_task(agent.run(halt))
    try:
        await until(cond, timeout_s=60, what=what)
    finally:
        halt.set()
        await asyncio.wait_for(task, 10)


async def test_a_halted_candidate_is_rolled_back_from_the_other_slot(reg: Registry, tmp_path: Path) -> None:
    """Metrics over MQTT; the halt's rollback manifest names 1.0.0, which the other slot holds."""
    v1 = os.urandom(200_000)
    reg.publish(v1, version="1.0.0", health=HEALTH)
    with gateway(reg, tmp_path / "data", OPEN_FIRST) as gw:
        agent = DeviceAgent(
            gw.url, "cam-3", reg.public_key.read_bytes(), tmp_path / "cam-3", attrs={"hw": "rev2"},
            model_id="detector", wait_s=5, metrics_interval_s=0.3, mqtt=gw.mqtt,
            metrics_source=SimulatedInference({"2.0.0": BURNS_CPU}, interval_s=0.3, rng=random.Random(3)),
        )  # fmt: skip
        halt = asyncio.Event()
        task = asyncio.create_task(agent.run(halt))
        try:
            await until(lambda: "healthy" in agent.events, timeout_s=30, what="1.0.0 installed")
            reg.publish(os.urandom(200_000), version="2.0.0", health=HEALTH)
            await until(lambda: "rolled_back" in agent.events, timeout_s=60, what="rolled back")
        finally:
            halt.set()
            await asyncio.wait_for(task, 10)
        current = await agent.running()
        assert current is not None and current.version == "1.0.0"
        assert current.sha256 == hashlib.sha256(v1).hexdigest()
        installs = ["downloaded", "verified", "activated", "healthy"]
        assert agent.events == [*installs, *installs, "rolled_back"]  # no download on the way back
        gates = (await operator(gw, "/gates"))["gates"]
        gate = next(g for g in gates if g["deployment"] == "detector@2.0.0")
        assert gate["stage"] == "halted"
        assert (await inventory(gw, "cam-3"))["last_event"] == "rolled_back"


async def test_a_halted_first_version_sends_the_device_back_to_its_previous_slot(
    reg: Registry, tmp_path: Path
) -> None:
    state = tmp_path / "cam-4"
    slots = Slots.open(state)  # a factory image in slot b, made current
    factory = os.urandom(10_000)
    partial, _ = slots.prepare(hashlib.sha256(factory).hexdigest())
    partial.write_bytes(factory)
    slots.commit("detector", "0.9.0", hashlib.sha256(factory).hexdigest())
    slots.switch()
    reg.publish(os.urandom(100_000), version="1.0.0", health=HEALTH)  # the site's first version: gated
    with gateway(reg, tmp_path / "data", FAST) as gw:
        agent = DeviceAgent(
            gw.url, "cam-4", reg.public_key.read_bytes(), state, attrs={"hw": "rev2"}, wait_s=5,
            metrics_interval_s=0.3, metrics_source=SimulatedInference({"1.0.0": BURNS_CPU}, interval_s=0.3,
            rng=random.Random(4), default=HEALTHY),
        )  # fmt: skip
        await run_until(agent, lambda: "rolled_back" in agent.events, "back to the previous slot")
        current = await agent.running()
        assert current is not None and (current.name, current.version) == ("b", "0.9.0")
        assert agent.events == ["downloaded", "verified", "activated", "healthy", "rolled_back"]


@pytest.mark.parametrize(
    "command", [["-m", "gateway.agent", "--help"], [str(ROOT / "tests" / "reference_agent.py"), "--help"]]
)
def test_the_agent_command_lines_answer_help(command: list[str]) -> None:
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--service-url" in done.stdout and "--public-key" in done.stdout
