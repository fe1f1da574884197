"""The mirror survives its own faults, through the real gateway: a full disk while an index is
being saved, and a cloud that corrects an artifact's URL while its transfer is stuck on the old one."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from tests.conftest import Registry, is_root
from tests.gw import gateway_settings, running, until
from tests.mirror.hostile import Fault, Hostile

MODEL = os.urandom(300_000)


async def status(gw: Gateway) -> dict[str, Any]:
    host, port = gw.operator_addresses[0][:2]
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/status") as r:
        assert r.status == 200
        return dict(await r.json())


async def until_status(
    gw: Gateway, cond: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        st = await status(gw)
        if cond(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; index {st['index']}, upstream {st['upstream']}, "
                f"deployments {st['deployments']}, errors {st['last_errors']}"
            )
        await asyncio.sleep(0.05)  # polling a condition with a deadline


def version_is(v: int) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st["index"] is not None and st["index"]["version"] == v


@pytest.fixture
def full_trust_folder(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None]]]:
    """``<data>/trust`` on its own real, tiny file system (tmpfs), and a way to fill and free it."""
    if not is_root():
        pytest.skip("mounting a small tmpfs to fill the disk needs root")
    data = tmp_path / "data"
    trust = data / "trust"
    trust.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(trust)], check=True)
    filler = trust / "filler"

    def fill() -> None:
        with filler.open("wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass  # full

    def free() -> None:
        filler.unlink()

    try:
        yield data, fill, free
    finally:
        subprocess.run(["umount", "-l", str(trust)], check=False)


async def test_index_that_failed_to_save_is_fetched_again(
    reg: Registry, full_trust_folder: tuple[Path, Callable[[], None], Callable[[], None]]
) -> None:
    data, fill, free = full_trust_folder
    reg.publish(b"one", version="1.0.0")
    async with running(gateway_settings(reg, data)) as gw:
        await until_status(gw, version_is(1), "index version 1")
        await asyncio.to_thread(fill)
        reg.publish(b"two", version="2.0.0")  # index version 2, while the disk is full
        st = await until_status(
            gw, lambda st: "cannot write" in (st["upstream"]["last_error"] or ""), "the disk error in status"
        )
        assert st["index"]["version"] == 1
        await asyncio.to_thread(free)
        # The same file upstream (no new ETag): it must be fetched again, not answered 304.
        st = await until_status(gw, version_is(2), "index version 2 once the disk has room")
        reg.publish(b"three", version="3.0.0")
        st = await until_status(gw, version_is(3), "index version 3")
        st = await until_status(gw, lambda st: st["upstream"]["last_error"] is None, "the error to clear")


@pytest.mark.parametrize("old", ["404", "stall"])
async def test_corrected_artifact_url_is_followed_without_a_restart(
    reg: Registry, tmp_path: Path, hostile: Hostile, old: str
) -> None:
    wrong = f"artifacts/wrong-{old}/detector.bin"
    if old == "stall":  # the old URL serves the first bytes, then nothing (a dead mirror node)
        hostile.override[wrong] = MODEL
        hostile.faults[wrong] = Fault(stall_after=64 << 10, times=1000)
    m = reg.publish(MODEL, version="1.0.0", extra={"artifact_url": wrong})  # index version 1
    settings = gateway_settings(reg, tmp_path / "data", upstream=hostile.url)
    async with running(settings) as gw:
        await until_status(gw, version_is(1), "index version 1")
        # The transfer is on the old URL (and, for the 404, already retrying it).
        await until(
            lambda: len(hostile.requests(wrong)) >= (2 if old == "404" else 1), what="the old URL tried"
        )
        reg.publish(MODEL, version="1.0.0")  # index version 2: same sha256, the right URL
        st = await until_status(
            gw,
            lambda st: bool(st["deployments"]) and st["deployments"][0]["mirrored"],
            "the artifact mirrored",
        )
        assert st["index"]["version"] == 2
        assert st["deployments"][0]["sha256"] == m["sha256"]
        host, port = gw.http_addresses[0][:2]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://{host}:{port}/artifacts/detector/1.0.0/detector-1.0.0.bin") as r,
        ):
            assert r.status == 200
            assert await r.read() == MODEL


@pytest.mark.parametrize("seed", range(5))
async def test_url_correction_at_a_random_instant_never_splices_the_old_file(
    reg: Registry, tmp_path: Path, hostile: Hostile, seed: int
) -> None:
    """The old URL serves other bytes and cuts at random points, so a partial from it keeps
    growing; the correction lands at a random instant. The blob must end byte-exact, and soon (a
    file spliced from both would fail its sha256 and wait minutes for a retry)."""
    rnd = random.Random(seed)
    wrong = "artifacts/old-node/detector.bin"
    hostile.override[wrong] = MODEL
    hostile.faults[wrong] = Fault(wrong=True, cut_after=rnd.randrange(1 << 10, 250_000), times=1000)
    reg.publish(MODEL, version="1.0.0", extra={"artifact_url": wrong})
    settings = gateway_settings(
        reg, tmp_path / "data", upstream=hostile.url, mirror={"bandwidth_bytes_per_s": 2_000_000}
    )
    async with running(settings) as gw:
        await until_status(gw, version_is(1), "index version 1")
        await asyncio.sleep(rnd.uniform(0, 0.3))  # a random instant, not a synchronisation
        reg.publish(MODEL, version="1.0.0")
        await until_status(
            gw,
            lambda st: bool(st["deployments"]) and st["deployments"][0]["mirrored"],
            "the artifact mirrored",
        )
        host, port = gw.http_addresses[0][:2]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://{host}:{port}/artifacts/detector/1.0.0/detector-1.0.0.bin") as r,
        ):
            assert r.status == 200
            assert await r.read() == MODEL
