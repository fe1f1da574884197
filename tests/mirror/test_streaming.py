"""Verified streaming through a real gateway: devices get an artifact while it is still arriving,
only inside chunks proven against the signed chunk list, from an upstream that misbehaves.

Every body a device receives is re-hashed chunk by chunk on the device side (``ChunkCheck``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.mirror.chunk_devices import ChunkCheck
from tests.mirror.hostile import Fault, Hostile

CHUNK = 64 << 10
MODEL = os.urandom(40 * CHUNK + 1234)  # 41 chunks, the last one short
SHA = hashlib.sha256(MODEL).hexdigest()
PATH = "/artifacts/detector/1.0.0/detector-1.0.0.bin"


def settings(reg: Registry, tmp_path: Path, hostile: Hostile) -> Any:
    return gateway_settings(reg, tmp_path / "data", upstream=hostile.url, mirror={"read_timeout_s": 5.0})


async def download(
    gw: Gateway, check: ChunkCheck, *, headers: dict[str, str] | None = None, start: int = 0
) -> tuple[int, CIMultiDict[str], bytes, bool]:
    """One download, retried on 404 and 503 every 20 ms (the device's own choice); returns the status, the
    headers, the body, and whether its first byte came before the artifact was verified."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(base_url(gw) + PATH, headers=headers or {}) as r:
                if (
                    r.status in (404, 503) and time.monotonic() < deadline
                ):  # no index yet, or not yet streaming
                    await r.read()
                    await asyncio.sleep(0.02)
                    continue
                body = bytearray()
                early: bool | None = None
                try:
                    async for piece in r.content.iter_any():
                        if early is None:
                            early = not gw.store.is_verified(SHA)
                        body += piece
                except aiohttp.ClientPayloadError:
                    pass  # cut off: what came is checked all the same
                check.received(start, bytes(body))
                return r.status, r.headers.copy(), bytes(body), bool(early)


async def test_devices_stream_verified_chunks_while_a_bad_chunk_is_fetched_again(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL, chunk_size=CHUNK)
    bad_chunk = 17
    hostile.faults[manifest["artifact_url"]] = Fault(corrupt_at=bad_chunk * CHUNK + 100, times=1)
    hostile.pace_s = 0.02  # about 3 MB/s: the transfer takes about a second
    check = ChunkCheck.from_registry(reg.root, manifest, MODEL)
    async with running(settings(reg, tmp_path, hostile)) as gw:
        got = await asyncio.gather(*(download(gw, check) for _ in range(5)))
        for status, headers, body, _early in got:
            assert status == 200
            assert body == MODEL
            assert "ETag" not in headers or headers["ETag"] == f'"{SHA}"'
        assert any(early for *_, early in got), "no device got a byte before the whole file was verified"
        assert check.bad_bytes == 0, check.problems
        await until(lambda: gw.store.is_verified(SHA), what="the artifact verified")
        # The bad chunk was fetched again from its own offset, and the whole file verified.
        assert f"bytes={bad_chunk * CHUNK}-" in hostile.requests(".bin")
        assert gw.stats["mirror.chunk_mismatches"] == 1
        assert hostile.sent[manifest["artifact_url"]] < len(MODEL) + 2 * (64 << 10) + CHUNK
        status, headers, body, _ = await download(gw, check)
        assert (status, headers.get("ETag"), body) == (200, f'"{SHA}"', MODEL), headers


async def test_while_streaming_no_whole_file_validator_and_ranges_are_served(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL, chunk_size=CHUNK)
    hostile.pace_s = 0.05  # about 1.3 MB/s
    check = ChunkCheck.from_registry(reg.root, manifest, MODEL)
    async with running(settings(reg, tmp_path, hostile)) as gw:
        tail = f"bytes={len(MODEL) - 5000}-"
        status, headers, body, early = await download(
            gw, check, headers={"Range": tail}, start=len(MODEL) - 5000
        )
        assert (status, body) == (206, MODEL[-5000:])
        assert headers["Content-Range"] == f"bytes {len(MODEL) - 5000}-{len(MODEL) - 1}/{len(MODEL)}"
        if early:  # a validator only once the whole file is verified
            assert "ETag" not in headers and "Last-Modified" not in headers
        await asyncio.sleep(0)
    hostile.log.clear()
    async with running(settings(reg, tmp_path / "again", hostile)) as gw:
        status, headers, body, early = await download(
            gw, check, headers={"Range": "bytes=10-19", "If-Range": f'"{SHA}"'}
        )
        if early:  # no whole-file validator can match yet: the whole representation
            assert (status, len(body)) == (200, len(MODEL))
        async with (
            aiohttp.ClientSession() as s,
            s.get(base_url(gw) + PATH, headers={"Range": "bytes=0-0,-1"}) as r,
        ):
            # Several ranges at once: not streamed (503), or multipart once the file is verified.
            assert r.status == 503 or (r.status == 206 and gw.store.is_verified(SHA))
    assert check.bad_bytes == 0, check.problems


async def test_a_chunk_list_not_matching_the_signed_digest_stops_the_artifact(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL, chunk_size=CHUNK)
    hostile.override[manifest["chunks"]["url"]] = hashlib.sha256(b"evil").digest() * 41
    async with running(settings(reg, tmp_path, hostile)) as gw:
        await until(lambda: gw.stats["mirror.rejected_artifacts"], what="the artifact refused")
        assert "chunk list sha256" in gw.stats.last_error["mirror.rejected_artifacts"]
        async with aiohttp.ClientSession() as s, s.get(base_url(gw) + PATH) as r:
            assert r.status == 503  # nothing streamed from an unproven list
            assert int(r.headers["Retry-After"]) >= 1
        assert hostile.requests(".bin") == []  # the artifact itself was not even fetched
        assert not gw.store.is_verified(SHA)


async def test_a_mirror_failing_for_good_cuts_the_download_after_verified_bytes_only(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL, chunk_size=CHUNK)
    bad_chunk = 9
    hostile.faults[manifest["artifact_url"]] = Fault(corrupt_at=bad_chunk * CHUNK, times=99)
    hostile.pace_s = 0.01
    check = ChunkCheck.from_registry(reg.root, manifest, MODEL)
    async with running(settings(reg, tmp_path, hostile)) as gw:
        status, _headers, body, _ = await download(gw, check)
        assert status == 200
        assert body == MODEL[: bad_chunk * CHUNK]  # cut off at the chunk that never verified
        assert check.bad_bytes == 0, check.problems
        await until(lambda: gw.stats["mirror.rejected_artifacts"], what="the artifact refused")
        assert f"chunk {bad_chunk} failed its digest" in gw.stats.last_error["mirror.rejected_artifacts"]


async def test_a_download_landing_while_the_artifact_is_published_is_served_not_503(
    reg: Registry, tmp_path: Path, hostile: Hostile, monkeypatch: Any
) -> None:
    """Between the partial's move into place and the store marking it verified (the blob folder's
    fsync: slow on an SD card), a new download found the fill still streaming but its file gone,
    and got 503 (a CI flake in ``test_range_clients``). It must wait for the publish and get the
    verified file. The slow fsync is the one fault injected (a real sleep in the real call)."""
    import threading

    from gateway.runtime import atomic

    moved, release = threading.Event(), threading.Event()
    real_fsync_dir = atomic.fsync_dir

    def slow_fsync_dir(path: Path) -> None:
        if (path / SHA).exists() and not moved.is_set():  # the blob folder, the partial just moved in
            moved.set()
            release.wait(5)
        real_fsync_dir(path)

    monkeypatch.setattr(atomic, "fsync_dir", slow_fsync_dir)
    reg.publish(MODEL, chunk_size=CHUNK)
    async with running(settings(reg, tmp_path, hostile)) as gw:
        await asyncio.to_thread(moved.wait, 15)
        assert moved.is_set(), "the publish never reached the blob folder's fsync"
        assert not gw.store.is_verified(SHA)  # inside the window
        async with aiohttp.ClientSession() as s:

            async def one_get() -> tuple[int, str | None, bytes]:  # once: no retry on a 503
                async with s.get(base_url(gw) + PATH) as r:
                    return r.status, r.headers.get("ETag"), await r.read()

            got = asyncio.ensure_future(one_get())
            await asyncio.sleep(0.3)  # the download is in, waiting on the publish
            release.set()
            status, etag, body = await got
        assert (status, etag) == (200, f'"{SHA}"')  # served as the verified blob
        assert body == MODEL
