"""Blobs changed under a running gateway, and a quota that must not freeze updates.

Everything is observed as a device and an installer would: downloads and polls over real HTTP,
``/status`` on the operator API, files in the data folder. A device that downloads only keeps what
matches the signed sha256; the guarantee checked here is stronger: a download *started* after the
blob was damaged is never answered 200 with wrong bytes, and no answer is a 5xx (a download
already streaming when the damage happens may finish with what it started: the device's own
sha256 check catches that one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from gateway.store.artifacts import ArtifactStore
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until

MB = 1 << 20
MODEL = os.urandom(3 * MB)
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def download(http: aiohttp.ClientSession, gw: Gateway, path: str = PATH) -> tuple[int, bytes, str]:
    async with http.get(base_url(gw) + path) as r:
        return r.status, await r.read(), r.headers.get("Retry-After", "")


def operator_url(gw: Gateway) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"http://{host}:{port}"


def check(status: int, retry_after: str) -> None:
    assert status in (200, 503), status  # never a 5xx but the 503 that says "come back"
    if status == 503:
        assert int(retry_after) >= 1


async def devices_until_good(
    http: aiohttp.ClientSession, gw: Gateway, damaged_at: float, rng: random.Random, devices: int = 3
) -> list[int]:
    """Several devices download at random instants until each gets the right bytes; checks every
    answer on the way. Returns the statuses seen."""
    seen: list[int] = []

    async def device() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, body, retry_after = await download(http, gw)
            seen.append(status)
            check(status, retry_after)
            if status == 200 and started > damaged_at:
                assert hashlib.sha256(body).hexdigest() == SHA, "wrong bytes served as the artifact"
                return
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the device's own random poll instant
        raise AssertionError("the artifact never came back")

    await asyncio.gather(*(device() for _ in range(devices)))
    return seen


@contextlib.asynccontextmanager
async def meanwhile(http: aiohttp.ClientSession, gw: Gateway, rng: random.Random) -> AsyncIterator[None]:
    stop = asyncio.Event()
    background = asyncio.ensure_future(devices_meanwhile(http, gw, stop, rng))
    try:
        yield
    except BaseException:
        background.cancel()
        with contextlib.suppress(BaseException):
            await background
        raise
    stop.set()
    await background


async def devices_meanwhile(
    http: aiohttp.ClientSession, gw: Gateway, stop: asyncio.Event, rng: random.Random
) -> None:
    """Devices downloading while the damage lands: any answer but a 5xx or a bad 503."""

    async def device() -> None:
        while not stop.is_set():
            status, _body, retry_after = await download(http, gw)
            check(status, retry_after)
            await asyncio.sleep(rng.uniform(0.0, 0.03))

    await asyncio.gather(*(device() for _ in range(2)))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_deleted_blob_is_fetched_again(
    reg: Registry, tmp_path: Path, http: aiohttp.ClientSession, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="artifact mirrored")
        assert (await download(http, gw))[:2] == (200, MODEL)
        blob = tmp_path / "data" / "blobs" / "sha256" / SHA
        async with meanwhile(http, gw, rng):
            await asyncio.sleep(rng.uniform(0, 0.1))  # the deletion lands at a random instant
            blob.unlink()
            (tmp_path / "data" / "blobs" / "sha256" / f"{SHA}.sig").unlink()
            damaged_at = time.monotonic()
            seen = await devices_until_good(http, gw, damaged_at, rng)
        # Streamed in verified chunks, a device can hold every byte just before the whole file's
        # sha256 and signature are checked and the blob published.
        await until(lambda: gw.store.is_verified(SHA), what="the blob verified again")
        assert 503 in seen or blob.exists()
        assert blob.read_bytes() == MODEL  # fetched again, verified again
        status = (await (await http.get(operator_url(gw) + "/status")).json())["deployments"]
        assert status[0]["mirrored"] is True


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_flipped_byte_is_never_served_and_the_blob_comes_back(
    reg: Registry, tmp_path: Path, http: aiohttp.ClientSession, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="artifact mirrored")
        blob = tmp_path / "data" / "blobs" / "sha256" / SHA
        async with meanwhile(http, gw, rng):
            await asyncio.sleep(rng.uniform(0, 0.1))
            os.chmod(blob, 0o644)
            with blob.open("r+b") as f:  # one byte, in place, at a random offset
                at = rng.randrange(len(MODEL))
                f.seek(at)
                f.write(bytes([MODEL[at] ^ 0x01]))
            damaged_at = time.monotonic()
            # Downloads started before the flip may stream either bytes; none after it may.
            await devices_until_good(http, gw, damaged_at, rng)
        await until(lambda: gw.store.is_verified(SHA), what="the blob verified again")
        assert blob.read_bytes() == MODEL
        quarantined = list((tmp_path / "data" / "quarantine").iterdir())
        assert [p.name.rpartition("-")[0] for p in quarantined if not p.name.endswith(".sig")] == [SHA]


async def test_the_scrub_finds_rot_quarantines_it_and_status_shows_it(
    reg: Registry, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    reg.publish(MODEL)
    settings = gateway_settings(
        reg, tmp_path / "data", store={"scrub_bytes_per_s": 64 * MB, "scrub_interval_s": 0.2}
    )
    async with running(settings) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="artifact mirrored")
        blob = tmp_path / "data" / "blobs" / "sha256" / SHA
        os.chmod(blob, 0o644)
        with blob.open("r+b") as f:
            f.seek(12345)
            f.write(bytes([MODEL[12345] ^ 0x80]))
        damaged_at = time.monotonic()

        async def scrub() -> dict[str, object]:
            async with http.get(operator_url(gw) + "/status") as r:
                return dict((await r.json())["store"]["scrub"])

        deadline = time.monotonic() + 15
        while not (report := await scrub())["total_mismatches"]:
            assert time.monotonic() < deadline, "the scrub never found the flipped byte"
            await asyncio.sleep(0.05)
        assert report["finished_at"] and report["mismatches"] == [SHA] and report["blobs"] >= 1
        assert int(str(report["bytes"])) >= len(MODEL)
        assert any(p.name.startswith(SHA) for p in (tmp_path / "data" / "quarantine").iterdir())
        await devices_until_good(http, gw, damaged_at, random.Random(7))
        await until(lambda: gw.store.is_verified(SHA), what="the blob verified again")
        assert blob.read_bytes() == MODEL


async def test_the_scrub_keeps_to_its_rate(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "data")
    store.blobs.create_dirs()  # what open() does first (the constructor touches no disk)
    data = os.urandom(2 * MB)
    sha = hashlib.sha256(data).hexdigest()
    store.blobs.partial_path(sha).write_bytes(data)
    await store.served.publish(sha, b"signature")
    started = time.monotonic()
    report = await store.scrubber.scrub_pass(rate_bytes_per_s=4 * MB)
    assert time.monotonic() - started >= 0.45  # 2 MB at 4 MB/s: never faster than the rate
    assert report.bytes == len(data) and report.mismatches == [] and store.is_verified(sha)
    await store.close()


# -- the quota story --------------------------------------------------------------------------------


async def test_three_5mb_versions_under_a_12mb_quota_the_newest_is_mirrored_and_offered(
    reg: Registry, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    models = {v: os.urandom(5 * MB) for v in ("1.0.0", "2.0.0", "3.0.0")}
    reg.publish(models["1.0.0"], version="1.0.0")
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        store={"quota_bytes": 12_000_000},
        telemetry={"window_s": 1.0},
        uplink={"report_interval_s": 1.0},
    )
    async with running(settings) as gw:
        running_version: str | None = None

        async def poll_until(version: str) -> None:
            """The device polls at random instants until offered ``version``, installs it."""
            nonlocal running_version
            rng = random.Random(version)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                q = {"hw": "rev2", "model_id": "detector"}
                if running_version:
                    q["model_version"] = running_version
                async with http.get(f"{base_url(gw)}/devices/cam-1/updates", params=q) as r:
                    assert r.status in (200, 204), r.status
                    manifest = json.loads(await r.read()) if r.status == 200 else None
                if manifest is not None and manifest["version"] == version:
                    status, body, _ = await download(
                        http, gw, manifest["artifact_url"].removeprefix(base_url(gw))
                    )
                    if status == 200:
                        assert hashlib.sha256(body).hexdigest() == manifest["sha256"]
                        running_version = version
                        return
                await asyncio.sleep(rng.uniform(0.05, 0.2))
            raise AssertionError(f"{version} was never offered and served")

        async def gate_open(version: str) -> dict[str, object] | None:
            async with http.get(operator_url(gw) + "/gates") as r:
                gates = (await r.json())["gates"]
            return next((g for g in gates if g["deployment"] == f"detector@{version}"), None)

        await poll_until("1.0.0")
        reg.publish(models["2.0.0"], version="2.0.0")
        await poll_until("2.0.0")

        async def until_gate(version: str) -> object:
            deadline = time.monotonic() + 15
            while (gate := await gate_open(version)) is None:
                assert time.monotonic() < deadline, f"no gate opened for {version}"
                await asyncio.sleep(0.05)
            return gate["baseline"]

        assert await until_gate("2.0.0") == "1.0.0"  # v2's canary gate; 1.0.0 pinned
        reg.publish(models["3.0.0"], version="3.0.0")
        await poll_until("3.0.0")
        assert await until_gate("3.0.0") == "2.0.0"  # 2.0.0 was kept as the rollback target
        async with http.get(operator_url(gw) + "/status") as r:
            status = await r.json()
        assert status["store"]["used_bytes"] <= 12_000_000
        mirrored = {d["version"]: d["mirrored"] for d in status["deployments"]}
        assert mirrored == {"2.0.0": True, "3.0.0": True}  # 1.0.0 retired from the index, evicted
        assert status["counters"].get("mirror.storage_errors", 0) == 0  # never refused, not even once


def test_the_quarantine_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    blobs = ArtifactStore(tmp_path / "data").blobs
    blobs.create_dirs()

    def rotten(size: int) -> str:
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        blobs.blob_path(sha).write_bytes(data[:-1] + b"!")  # bytes that no longer match the name
        blobs.sig_path(sha).write_bytes(b"sig")
        return sha

    first = rotten(1000)
    assert blobs.check(first) is None  # the start-up check quarantines, never deletes
    assert [n.rpartition("-")[0] for n in blobs.quarantined()] == [first]
    assert not blobs.blob_path(first).exists()
    names = []
    for i in range(5):
        sha = rotten(1000)
        blobs.quarantine(sha, inode=None, now=2_000_000_000 + i)
        names.append(f"{sha}-{2_000_000_000 + i}")
    assert sorted(blobs.quarantined()) == sorted(names[1:])  # four kept: the oldest went first
    big = rotten(5000)
    blobs.quarantine(big, inode=None, now=2_100_000_000, max_files=4, max_bytes=6500)
    assert sorted(blobs.quarantined()) == sorted([f"{big}-2100000000", names[4]])  # 6000 bytes fit
    assert sorted(p.name for p in blobs.quarantine_dir.iterdir() if p.name.endswith(".sig")) == sorted(
        f"{n}.sig" for n in blobs.quarantined()
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_catalog_that_cannot_be_written_stops_nothing_and_is_written_once_it_can(
    reg: Registry, tmp_path: Path, http: aiohttp.ClientSession, seed: int
) -> None:
    """``catalog.json`` cannot be replaced (here a directory stands in its place; in the field: out
    of descriptors, or a read-only remount), from a random instant after start-up, mirrored or not:
    the mirror keeps polling and mirrors the next version, devices download both, ``/status``
    counts the failed writes, and the catalog is written once the disk takes it again. (Found under
    load in CI: EMFILE in the catalog's temp file ended the mirror's poll loop for good.)"""
    rng = random.Random(seed)
    reg.publish(MODEL)
    catalog = tmp_path / "data" / "catalog.json"
    second = os.urandom(MB)
    path2 = "/artifacts/detector/2.0.0/detector-2.0.0.bin"
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await asyncio.sleep(rng.uniform(0, 0.5))  # the fault lands at a random instant
        while True:  # the gateway may be replacing the file at this very moment
            catalog.unlink(missing_ok=True)
            try:
                catalog.mkdir()  # os.replace onto it fails: IsADirectoryError
                break
            except FileExistsError:
                continue
        await asyncio.sleep(rng.uniform(0, 0.3))
        reg.publish(second, version="2.0.0")

        async def served(path: str, model: bytes) -> None:
            deadline = time.monotonic() + 15
            while (await download(http, gw, path))[:2] != (200, model):
                assert time.monotonic() < deadline, f"{path} was never served"
                await asyncio.sleep(0.1)

        await served(path2, second)
        await served(PATH, MODEL)

        async def failed_writes() -> int:
            async with http.get(operator_url(gw) + "/status") as r:
                return int((await r.json())["counters"].get("store.catalog_write_errors", 0))

        # the catalog is written after a publish, not before its bytes are served: /status counts
        # the failed write within moments of the download, read until a deadline
        deadline = time.monotonic() + 10
        while await failed_writes() < 1:
            assert time.monotonic() < deadline, "no failed catalog write counted on /status"
            await asyncio.sleep(0.1)
        catalog.rmdir()
        await until(catalog.is_file, what="catalog written again")
        names = {e["version"] for e in json.loads(catalog.read_text())["entries"]}
        assert {"1.0.0", "2.0.0"} <= names
