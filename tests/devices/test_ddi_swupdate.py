"""Debian's real SWUpdate (suricatta, hawkBit mode) as the device, against a real gateway process.

The cloud builds a signed ``.swu`` (CMS-signed ``sw-description``, one ``rawfile`` image into a
folder of the test's) and publishes it with ``ota-gateway registry publish`` for the cohort
``hw:rev2``. The gateway mirrors it and offers it over DDI. ``dev1`` (its SWUpdate ``identify``
says ``hw = rev2``) is offered it, downloads it through a proxy of the test's that cuts the first
download after 512 KiB, so suricatta resumes with a ``Range`` request, installs it, and after its
restart (``-c 2``: the update tested good) confirms it; the gateway's inventory then shows 2.0.0.
``dev2`` (``hw = rev1``), polling beside it all along, is offered nothing. Both authenticate with
their ``TargetToken`` (token access), which the download sends too.

Each SWUpdate gets its own ``TMPDIR`` (its IPC sockets live there), ``-H ddi-test:1.0`` (this box
has no ``/etc/hwrevision``) and the ``none`` bootloader (Debian's default: its state is kept in
memory, so the restart says ``-c 2``, as a device without persistent state does).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Registry
from tests.gw import until
from tests.peers import ROOT, free_port, gateway_process, need, stop, wait_port
from tests.swu import HW_BOARD, HW_REVISION, SigningCert, build_swu

CUT_AFTER = 512 << 10
TOKENS = {"dev1": "token-of-dev1", "dev2": "token-of-dev2"}


class CuttingProxy:
    """TCP proxy to the gateway that cuts the first artifact download after ``CUT_AFTER`` bytes
    of its response, and keeps every request head it forwarded."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[str] = []
        self.cut = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        downloading = asyncio.Event()

        async def upward() -> None:
            while data := await reader.read(65536):
                text = data.decode("latin-1")
                if text.startswith(("GET ", "POST ", "PUT ", "HEAD ")):
                    self.requests.append(text.split("\r\n\r\n", 1)[0])
                    if text.startswith("GET /artifacts/") and not self.cut:
                        downloading.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downward() -> None:
            sent = 0
            while data := await up_reader.read(65536):
                if downloading.is_set() and not self.cut:
                    if sent + len(data) >= CUT_AFTER:
                        writer.write(data[: CUT_AFTER - sent])
                        await writer.drain()
                        self.cut = True
                        writer.transport.abort()  # the link drops mid-download
                        up_writer.transport.abort()
                        return
                    sent += len(data)
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upward(), downward())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            up_writer.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@contextmanager
def swupdate(tmp: Path, dev: str, hw: str, cert: Path, url: str, *extra: str) -> Iterator[Path]:
    """A running SWUpdate in suricatta mode for ``dev``; yields its log file."""
    folder = tmp / dev
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    cfg = folder / "swupdate.cfg"
    cfg.write_text(
        f'globals : {{ verbose = true; loglevel = 6; }};\nidentify : ( {{ name = "hw"; value = "{hw}"; }} );\n'
    )
    log = folder / f"swupdate{len(list(folder.glob('swupdate*.log')))}.log"
    suricatta = f"-t DEFAULT -u {url} -i {dev} -k {TOKENS[dev]} -p 1 -r 5 -w 1 {' '.join(extra)}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [need("swupdate"), "-v", "-f", str(cfg), "-H", f"{HW_BOARD}:{HW_REVISION}", "-k", str(cert),
             "-u", suricatta],
            env={**os.environ, "TMPDIR": str(folder / "tmp") + "/"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: swupdate and the children it forked
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def devices(http: aiohttp.ClientSession, operator: str) -> dict[str, Any]:
    async with http.get(f"{operator}/devices") as r:
        return {d["device_id"]: d for d in (await r.json())["devices"]}


def publish_swu(reg: Registry, tmp_path: Path) -> tuple[SigningCert, bytes, Path]:
    """The cloud: a signed .swu installing a random payload into dev1's folder, published with
    ``ota-gateway registry publish`` for the cohort ``hw:rev2``."""
    need("swupdate")
    need("openssl")
    signer = SigningCert.make(tmp_path / "cloud-swu")
    target = tmp_path / "dev1-rootfs"
    target.mkdir()
    payload = os.urandom(3 << 20)
    swu = build_swu(
        tmp_path / "build", signer, version="2.0.0", payload=payload, target=target / "payload.bin"
    )
    subprocess.run(
        [sys.executable, "-m", "gateway", "registry", "publish", "--key", str(reg.private_key), "--model-id", "fw",
         "--version", "2.0.0", "--site", "test-site", "--cohort", "hw:rev2", str(reg.root), str(swu)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return signer, payload, target


async def test_swupdate_suricatta_updates_through_the_gateway_with_a_cut_and_a_resume(
    reg: Registry, tmp_path: Path
) -> None:
    need("swupdate")
    need("openssl")
    signer, payload, target = await asyncio.to_thread(publish_swu, reg, tmp_path)
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    http_port, operator_port = free_port(), free_port()
    args = ["--data", str(tmp_path / "data"), "--upstream", str(reg.root), "--site", "test-site",
            "--trusted-key", str(reg.public_key), "--http", f"127.0.0.1:{http_port}",
            "--operator", f"127.0.0.1:{operator_port}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {"OTA_GATEWAY_DDI__ENABLED": "true", "OTA_GATEWAY_GATES__FIRST_VERSION": "open",
           "OTA_GATEWAY_DEVICES__ACCESS": "token", "OTA_GATEWAY_DEVICES__TOKENS_FILE": str(tmp_path / "tokens.json"),
           "OTA_GATEWAY_DEVICES__POLL_INTERVAL_S": "1", "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5"}  # fmt: skip
    with (tmp_path / "gateway.log").open("wb") as gw_log:
        gateway = gateway_process(args, env=env, stdout=gw_log, stderr=subprocess.STDOUT)
    proxy = CuttingProxy(http_port)
    http = aiohttp.ClientSession()
    operator = f"http://127.0.0.1:{operator_port}"
    try:
        await asyncio.to_thread(wait_port, http_port, 30)
        # the operator port may listen a moment after the HTTP port
        await asyncio.to_thread(wait_port, operator_port, 30)
        url = f"http://127.0.0.1:{await proxy.start()}"
        with swupdate(tmp_path, "dev2", "rev1", signer.cert, url) as dev2_log:
            with swupdate(tmp_path, "dev1", "rev2", signer.cert, url) as dev1_log:
                installed = target / "payload.bin"
                await until(
                    lambda: installed.exists() and installed.read_bytes() == payload
                    and "pending testing" in dev1_log.read_text(errors="replace"),
                    timeout_s=90, what=f"dev1 installed the .swu (see {dev1_log})",
                )  # fmt: skip
            banner = (tmp_path / "gateway.log").read_text(errors="replace")
            assert "hawkBit DDI:              tenant 'DEFAULT' on the device API" in banner
            text = dev1_log.read_text(errors="replace")
            assert "Update action available" in text and "SWUPDATE successful" in text
            # this build checks the downloaded file against the announced SHA-1 (and fails the update on
            # "Checksum does not match"): the gateway's SHA-1 held, across the resume
            assert "Checksum does not match" not in text
            assert proxy.cut  # the first download was cut ...
            resumed = [
                r for r in proxy.requests if r.startswith("GET /artifacts/fw/2.0.0/") and "Range: bytes=" in r
            ]
            assert resumed, proxy.requests  # ... and resumed with a range request
            assert "TargetToken token-of-dev1" in resumed[0]  # the download carried the device's token
            dev1 = (await devices(http, operator))["dev1"]
            assert (dev1["last_event"], dev1["model_version"]) == ("downloaded", None)  # not yet confirmed
            # dev1 restarts on the new image and reports it tested good (-c 2)
            with swupdate(tmp_path, "dev1", "rev2", signer.cert, url, "-c", "2"):
                deadline = asyncio.get_running_loop().time() + 60
                while (await devices(http, operator))["dev1"]["model_version"] != "2.0.0":
                    assert asyncio.get_running_loop().time() < deadline, (
                        "dev1's confirmation in the inventory"
                    )
                    await asyncio.sleep(0.1)  # polling a condition with a deadline
            dev1 = (await devices(http, operator))["dev1"]
            assert (dev1["model_id"], dev1["last_event"], dev1["attrs"]["hw"]) == ("fw", "healthy", "rev2")
            # dev2, outside the cohort, polled all along and was offered nothing
            dev2 = (await devices(http, operator))["dev2"]
            assert dev2["attrs"]["hw"] == "rev1" and dev2["model_version"] is None
        text2 = dev2_log.read_text(errors="replace")
        assert "No pending action on server" in text2
        assert "Update action available" not in text2 and "deploymentBase" not in text2
        assert not any("/controller/v1/dev2/deploymentBase" in r for r in proxy.requests)
    finally:
        await proxy.stop()
        await http.close()
        await asyncio.to_thread(stop, gateway)
