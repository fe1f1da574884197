"""Debian's real SWUpdate (suricatta) held by the site's canary gate: a real gateway process with
its gates on (every version gated, the first too), one SWUpdate device in the cohort. The cloud
publishes an image whose signed description names another sha256 than its payload's, so the
install fails on the device: suricatta reports ``proceeding`` then ``closed``/``failure``, the gate
counts the install failure and halts the candidate in its first wave, and the device is offered it
no more. The site allows no failed install (``gates.install_failure_max = 0``): with one device, one
failure is evidence at the stated false-halt rate only against that limit (against 20 % it would
leave the wave undecided, held for a person)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import Registry
from tests.devices.test_ddi_swupdate import TOKENS, devices, swupdate
from tests.peers import ROOT, free_port, gateway_process, need, stop, wait_port
from tests.swu import SigningCert, build_swu


def publish_broken_swu(reg: Registry, tmp_path: Path, signer: SigningCert) -> None:
    payload = os.urandom(200_000)
    swu = build_swu(tmp_path / "build", signer, version="3.0.0", payload=payload,
                    target=tmp_path / "dev1-rootfs" / "payload.bin", declared=os.urandom(16))  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "gateway", "registry", "publish", "--key", str(reg.private_key), "--model-id", "fw",
         "--version", "3.0.0", "--site", "test-site", "--cohort", "hw:rev2", str(reg.root), str(swu)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def poll_until(what: str, timeout_s: float, check: object) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)  # polling a condition with a deadline


async def test_a_failing_swupdate_install_halts_the_candidate_at_its_first_wave(
    reg: Registry, tmp_path: Path
) -> None:
    need("swupdate")
    need("openssl")
    signer = await asyncio.to_thread(SigningCert.make, tmp_path / "cloud-swu")
    (tmp_path / "dev1-rootfs").mkdir()
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    http_port, operator_port = free_port(), free_port()
    args = ["--data", str(tmp_path / "data"), "--upstream", str(reg.root), "--site", "test-site",
            "--trusted-key", str(reg.public_key), "--http", f"127.0.0.1:{http_port}",
            "--operator", f"127.0.0.1:{operator_port}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {"OTA_GATEWAY_DDI__ENABLED": "true", "OTA_GATEWAY_DEVICES__ACCESS": "token",
           "OTA_GATEWAY_DEVICES__TOKENS_FILE": str(tmp_path / "tokens.json"),
           "OTA_GATEWAY_DEVICES__POLL_INTERVAL_S": "1", "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5",
           "OTA_GATEWAY_GATES__WAVES": "[100.0]", "OTA_GATEWAY_GATES__INSTALL_FAILURE_MAX": "0",
           "OTA_GATEWAY_GATES__SOAK_MIN_S": "3600", "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "1",
           "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1"}  # fmt: skip
    with (tmp_path / "gateway.log").open("wb") as gw_log:
        gateway = gateway_process(args, env=env, stdout=gw_log, stderr=subprocess.STDOUT)
    operator = f"http://127.0.0.1:{operator_port}"
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.to_thread(wait_port, http_port, 30)
            # the operator port may listen a moment after the HTTP port
            await asyncio.to_thread(wait_port, operator_port, 30)
            with swupdate(tmp_path, "dev1", "rev2", signer.cert, f"http://127.0.0.1:{http_port}") as log:

                async def described() -> bool:
                    return (await devices(http, operator)).get("dev1", {}).get("attrs", {}).get(
                        "hw"
                    ) == "rev2"

                await poll_until("dev1 in the inventory with its attributes", 30, described)
                await asyncio.to_thread(publish_broken_swu, reg, tmp_path, signer)

                async def halted() -> bool:
                    async with http.get(f"{operator}/gates") as r:
                        gates = {g["deployment"]: g for g in (await r.json())["gates"]}
                    return gates.get("fw@3.0.0", {}).get("stage") == "halted"

                await poll_until(f"the candidate halted (see {log})", 90, halted)
                async with http.get(f"{operator}/gates") as r:
                    (gate,) = [g for g in (await r.json())["gates"] if g["deployment"] == "fw@3.0.0"]
                halt = gate["last_decision"]
                assert (halt["action"], halt["wave"]) == ("halt", 0)
                assert any(
                    v["criterion"] == "install_failures" and v["result"] == "worse" for v in halt["verdicts"]
                )
                dev1 = (await devices(http, operator))["dev1"]
                assert (dev1["last_event"], dev1["model_version"]) == ("failed", None)
                text = log.read_text(errors="replace")
                assert "HASH mismatch" in text  # the install itself failed on the device
                assert "Update action available" in text  # it was offered in its wave, and failed
                offered, idle = (
                    text.count("Update action available"),
                    text.count("No pending action on server"),
                )

                async def three_more_polls() -> bool:
                    return log.read_text(errors="replace").count("No pending action on server") >= idle + 3

                await poll_until("three more polls of dev1", 30, three_more_polls)
                assert log.read_text(errors="replace").count("Update action available") == offered  # no more
        finally:
            await asyncio.to_thread(stop, gateway)
