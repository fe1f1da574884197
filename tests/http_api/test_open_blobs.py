"""A verified blob held open for downloads is still never served once the file on disk is not the
one that was verified: written in place, truncated, chmod-ed, deleted, replaced by a symlink or
by another file. The first download holds the blob open; the damage lands; the very next request
must not get those bytes (503 with Retry-After, as when the file was opened for each request), and
once the store has checked or fetched the blob again every download is exact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until

MODEL = os.urandom(1_500_000)
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


def flip(blob: Path, rng: random.Random) -> None:
    os.chmod(blob, 0o644)
    with blob.open("r+b") as f:
        at = rng.randrange(len(MODEL))
        f.seek(at)
        f.write(bytes([MODEL[at] ^ 0x01]))


def truncate(blob: Path, rng: random.Random) -> None:
    os.chmod(blob, 0o644)
    os.truncate(blob, rng.randrange(len(MODEL)))


def chmod(blob: Path, rng: random.Random) -> None:
    os.chmod(blob, 0o600)


def delete(blob: Path, rng: random.Random) -> None:
    blob.unlink()


def symlink(blob: Path, rng: random.Random) -> None:
    elsewhere = blob.parent.parent / "elsewhere"
    elsewhere.write_bytes(MODEL)
    blob.unlink()
    blob.symlink_to(elsewhere)


def replace(blob: Path, rng: random.Random) -> None:
    other = blob.with_name("other")
    other.write_bytes(bytes(b ^ 0xFF for b in MODEL[:4096]) + MODEL[4096:])
    os.replace(other, blob)


DAMAGE: list[Callable[[Path, random.Random], None]] = [flip, truncate, chmod, delete, symlink, replace]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda d: d.__name__)
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_held_blob_changed_on_disk_is_not_served(
    reg: Registry, tmp_path: Path, damage: Callable[[Path, random.Random], None], seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(MODEL)
    async with running(gateway_settings(reg, tmp_path / "data")) as gw, aiohttp.ClientSession() as s:
        await until(lambda: gw.store.is_verified(SHA), what="artifact mirrored")
        url = base_url(gw) + PATH
        first = rng.randrange(len(MODEL))
        rng_header = {"Range": f"bytes={first}-"}
        async with s.get(url, headers=rng_header) as r:  # now held open
            assert (r.status, await r.read()) == (206, MODEL[first:])
        damage(gw.store.blobs.blob_path(SHA), rng)
        async with s.get(url, headers=rng_header) as r:
            assert r.status == 503, damage.__name__
            assert int(r.headers["Retry-After"]) >= 1
        await until(lambda: gw.store.is_verified(SHA), timeout_s=30, what="the blob verified again")
        deadline = time.monotonic() + 30
        while True:
            async with s.get(url) as r:
                body = await r.read()
            assert r.status in (200, 503)
            if r.status == 200:
                assert body == MODEL
                break
            assert time.monotonic() < deadline, "never served again"
            await asyncio.sleep(0.05)
