"""The guarantee of verified streaming, through the real process: not one byte outside a verified
chunk reaches a device, whatever the timing.

Each schedule (one seed): a registry with a model and its signed chunk list behind a slow upstream
that corrupts one random chunk the first time it sends it; ``ota-gateway serve`` as a real process;
devices that ask for random ranges (whole file, ``a-b``, ``a-``, suffixes) at random instants while
the artifact is still arriving, and go on across a ``kill -9`` of the gateway at a random instant
and its restart. Every body a device receives (cut off or not) is re-hashed chunk by chunk against
the signed chunk list on the device side; the invariant is 0 unverified bytes. The schedule also
checks that it tested something: some device got bytes before the whole file was verified.

``STREAM_SCHEDULES`` sets the number of schedules (the default keeps the suite fast).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import until
from tests.mirror.chunk_devices import ChunkCheck
from tests.mirror.hostile import Fault, Hostile
from tests.peers import free_port, gateway_process, serve_args, stop

SCHEDULES = int(os.environ.get("STREAM_SCHEDULES", "1"))
CHUNK = 64 << 10
MODEL = os.urandom(48 * CHUNK + 777)
ENV = {
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.2",
    "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.05",
    "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.2",
}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def random_range(rng: random.Random, length: int) -> str | None:
    kind = rng.randrange(4)
    if kind == 0:
        return None  # the whole file
    a = rng.randrange(length)
    if kind == 1:
        return f"bytes={a}-{min(length - 1, a + rng.randrange(1, 4 * CHUNK))}"
    if kind == 2:
        return f"bytes={a}-"
    return f"bytes=-{rng.randrange(1, 3 * CHUNK)}"


class Devices:
    def __init__(self, url: str, check: ChunkCheck, rng: random.Random) -> None:
        self.url = url
        self.check = check
        self.rng = rng
        self.statuses: list[int] = []
        self.early_bytes = 0  # bytes received in answers without a whole-file ETag
        self.verified_seen = asyncio.Event()  # an answer carried the whole-file ETag

    async def one(self, s: aiohttp.ClientSession, who: str) -> None:
        rng_header = random_range(self.rng, len(MODEL))
        headers = {"Range": rng_header} if rng_header else {}
        try:
            async with s.get(self.url, headers=headers) as r:
                self.statuses.append(r.status)
                if r.status not in (200, 206):
                    await r.read()
                    return
                start = 0
                if r.status == 206:
                    m = _CONTENT_RANGE.match(r.headers["Content-Range"])
                    assert m is not None, r.headers["Content-Range"]
                    start = int(m.group(1))
                body = bytearray()
                try:
                    async for piece in r.content.iter_any():
                        body += piece
                except aiohttp.ClientPayloadError:
                    pass  # cut off (the gateway was killed): what came is checked all the same
                self.check.received(start, bytes(body), who)
                if "ETag" in r.headers:
                    self.verified_seen.set()
                else:
                    self.early_bytes += len(body)
        except (aiohttp.ClientConnectionError, TimeoutError):
            self.statuses.append(0)  # the gateway is down (killed, restarting)

    async def device(self, who: str, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            while not stop.is_set():
                await asyncio.sleep(self.rng.uniform(0, 0.15))  # the device's own random instant
                await self.one(s, who)


def partial_size(data: Path) -> int:
    parts = list((data / "partial").glob("*.part"))
    return parts[0].stat().st_size if parts else 0


@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_no_byte_outside_a_verified_chunk_reaches_a_device(
    reg: Registry, tmp_path: Path, hostile: Hostile, seed: int
) -> None:
    rng = random.Random(seed)
    manifest = reg.publish(MODEL, chunk_size=CHUNK)
    bad_offset = rng.randrange(len(MODEL))
    hostile.faults[manifest["artifact_url"]] = Fault(corrupt_at=bad_offset, times=1)
    hostile.pace_s = 0.03  # about 2 MB/s: the 3 MB model takes about a second and a half
    check = ChunkCheck.from_registry(reg.root, manifest, MODEL)
    data = tmp_path / "data"
    port = free_port()
    args = serve_args(data, hostile.url, port, site="test-site", trusted_key=reg.public_key)
    devices = Devices(f"http://127.0.0.1:{port}/{manifest['artifact_url']}", check, rng)
    stop_devices = asyncio.Event()
    crowd = [asyncio.ensure_future(devices.device(f"device {i}", stop_devices)) for i in range(6)]
    proc = gateway_process(args, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await until(lambda: hostile.requests(".bin"), 30, "the transfer seen at the upstream")
        await asyncio.sleep(rng.uniform(0.0, 1.4))  # kill -9 at a random instant of the transfer
        proc.kill()
        await asyncio.to_thread(proc.wait)
        held = partial_size(data)
        before = len(hostile.requests(".bin"))
        proc = gateway_process(
            args, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(devices.verified_seen.wait(), 60)
        except TimeoutError:
            finished = False
        else:
            finished = True
            for _ in range(3):  # and a few answers after that
                async with aiohttp.ClientSession() as s:
                    await devices.one(s, "late device")
    finally:
        stop_devices.set()
        await asyncio.gather(*crowd, return_exceptions=True)
        stop(proc)
    assert check.bad_bytes == 0, check.problems[:5]  # the invariant first, however it ended
    assert finished, "the artifact was never verified"
    assert devices.early_bytes > 0, "no device got bytes before the whole file was verified"
    assert set(devices.statuses) <= {0, 200, 206, 404, 503}, devices.statuses
    after = hostile.requests(".bin")[before:]
    if held >= CHUNK and after:  # the restart kept the verified chunks it re-checked
        assert after[0] is not None and 0 < int(after[0][6:-1]) <= held, (held, after[0])
    assert (data / "blobs" / "sha256" / manifest["sha256"]).read_bytes() == MODEL
