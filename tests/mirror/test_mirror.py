"""The mirror against a hostile upstream: cut, stalled, wrong, over-long, stale, expired, unknown key."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core import settings as S
from gateway.mirror.mirror import Mirror
from gateway.mirror.open_upstream import upstream_from
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.store.lookup import Pending, Verified
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState
from tests.conftest import Registry
from tests.mirror.hostile import Fault, Hostile
from tests.peers import small_disk

MODEL = os.urandom(700_000)


def make_settings(upstream: str, data: Path, **mirror: object) -> S.Settings:
    m = dataclasses.replace(
        S.MirrorSettings(upstream=upstream, retry_initial_s=0.01, retry_max_s=0.05, read_timeout_s=1.0),
        **mirror,
    )
    return S.Settings(site="test-site", data_dir=str(data), mirror=m)


async def open_mirror(reg: Registry, upstream: str, data: Path, **mirror: object) -> Mirror:
    s = make_settings(upstream, data, **mirror)
    keys = load_trusted_keys([reg.public_key], "test")
    trust = TrustState(data / "trust", keys, s.site, s.trust.min_valid_time)
    store = ArtifactStore(data, quota_bytes=s.store.quota_bytes)
    await store.open()
    m = Mirror(s, upstream_from(s.mirror), trust, store, Stats())
    await m.open()
    return m


async def settle(m: Mirror, sha: str, timeout_s: float = 10) -> None:
    for d in m.index.deployments if m.index else ():
        if d.sha256 == sha:
            task = m.fetcher.ensure(d)
            if task is not None:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
    assert m.store.is_verified(sha)


async def test_folder_upstream_mirrors_and_verifies(reg: Registry, tmp_path: Path) -> None:
    manifest = reg.publish(MODEL)
    m = await open_mirror(reg, str(reg.root), tmp_path / "data")
    try:
        assert await m.poll_once()
        await settle(m, manifest["sha256"])
        got = m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin")
        assert isinstance(got, Verified)
        assert got.path.read_bytes() == MODEL
        sig = m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin.sig")
        assert isinstance(sig, Verified)
        assert sig.path.read_bytes() == (reg.root / (manifest["artifact_url"] + ".sig")).read_bytes()
        assert not await m.poll_once()  # unchanged: nothing new
    finally:
        await m.close()


async def test_cut_mid_body_resumes_with_range(reg: Registry, tmp_path: Path, hostile: Hostile) -> None:
    manifest = reg.publish(MODEL)
    hostile.faults[manifest["artifact_url"]] = Fault(cut_after=300_000, times=2)
    m = await open_mirror(reg, hostile.url, tmp_path / "data")
    try:
        await m.poll_once()
        await settle(m, manifest["sha256"])
        ranges = hostile.requests(".bin")
        assert ranges[0] is None
        assert ranges[1] is not None
        assert ranges[1].startswith("bytes=")
        assert int(ranges[1][6:-1]) > 0
        assert m.store.blobs.blob_path(manifest["sha256"]).read_bytes() == MODEL
        assert m.stats["mirror.transport_errors"] >= 2
    finally:
        await m.close()


async def test_stalled_transfer_times_out_and_resumes(
    reg: Registry, tmp_path: Path, hostile: Hostile
) -> None:
    manifest = reg.publish(MODEL)
    hostile.faults[manifest["artifact_url"]] = Fault(stall_after=200_000)
    m = await open_mirror(reg, hostile.url, tmp_path / "data", read_timeout_s=0.3)
    try:
        await m.poll_once()
        await settle(m, manifest["sha256"])
        assert len(hostile.requests(".bin")) == 2
    finally:
        await m.close()


@pytest.mark.parametrize(
    "fault", [Fault(wrong=True, times=99), Fault(extra=5000, times=99)], ids=["wrong", "long"]
)
async def test_bad_bytes_rejected_and_never_served(
    reg: Registry, tmp_path: Path, hostile: Hostile, fault: Fault
) -> None:
    good = reg.publish(b"v1" * 1000, version="1.0.0")
    m = await open_mirror(reg, hostile.url, tmp_path / "data")
    try:
        await m.poll_once()
        await settle(m, good["sha256"])
        bad = reg.publish(MODEL, version="2.0.0")
        hostile.faults[bad["artifact_url"]] = fault
        await m.poll_once()
        for _ in range(200):
            if m.stats["mirror.rejected_artifacts"]:
                break
            await asyncio.sleep(0.01)
        assert m.stats["mirror.rejected_artifacts"] >= 1
        assert not m.store.is_verified(bad["sha256"])
        assert isinstance(m.store.lookup("detector", "2.0.0", "detector-2.0.0.bin"), Pending)
        assert isinstance(m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin"), Verified)
        part = m.store.blobs.partial_path(bad["sha256"])
        # Wrong bytes never stay on disk: dropped whole, or (with a chunk list) never written.
        assert not part.exists() or part.stat().st_size == 0 or fault.wrong is False
    finally:
        await m.close()


async def test_bad_indexes_rejected_last_good_kept(make_registry, tmp_path: Path) -> None:
    reg = make_registry()
    reg.publish(b"a", version="1.0.0")
    v1 = reg.index_bytes()
    reg.publish(b"b", version="2.0.0")
    hostile = Hostile(reg.root)
    await hostile.start()
    m = await open_mirror(reg, hostile.url, tmp_path / "data")
    rel = "sites/test-site/index.json"
    try:
        assert await m.poll_once()
        assert m.index is not None
        assert m.index.version == 2
        stranger = make_registry("stranger")
        stranger.publish(b"evil", version="6.6.6")
        reg.publish(b"c", version="3.0.0", expires_s=1, now=0)
        expired = reg.index_bytes()
        for body, reason in [
            (v1, "older"),
            (expired, "expired"),
            (stranger.index_bytes(), "no trusted key"),
            (b"{", "not JSON"),
        ]:
            hostile.override[rel] = body
            assert not await m.poll_once()
            assert reason in m.stats.last_error["mirror.rejected_indexes"]
            assert m.index.version == 2
        assert m.stats["mirror.rejected_indexes"] == 4
    finally:
        await m.close()
        await hostile.stop()


async def test_many_waiting_devices_one_transfer(reg: Registry, tmp_path: Path, hostile: Hostile) -> None:
    manifest = reg.publish(MODEL)
    m = await open_mirror(reg, hostile.url, tmp_path / "data", bandwidth_bytes_per_s=2_000_000)
    try:
        await m.poll_once()
        answers = [m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin") for _ in range(500)]
        assert all(isinstance(a, Pending) and a.retry_after_s >= 1 for a in answers)
        await settle(m, manifest["sha256"])
        assert len(hostile.requests(".bin")) == 1
    finally:
        await m.close()


async def test_restart_resumes_partial(reg: Registry, tmp_path: Path, hostile: Hostile) -> None:
    manifest = reg.publish(MODEL, chunk_size=65536)  # a restart resumes at the last verified chunk
    hostile.faults[manifest["artifact_url"]] = Fault(cut_after=400_000, times=99)
    m = await open_mirror(reg, hostile.url, tmp_path / "data")
    await m.poll_once()
    part = m.store.blobs.partial_path(manifest["sha256"])
    for _ in range(500):
        if part.exists() and part.stat().st_size > 0:
            break
        await asyncio.sleep(0.01)
    await m.close()  # the gateway goes away mid-transfer
    held = part.stat().st_size
    before = len(hostile.requests(".bin"))
    hostile.faults.clear()
    m = await open_mirror(reg, hostile.url, tmp_path / "data")
    try:
        await settle(m, manifest["sha256"])
        first_after_restart = hostile.requests(".bin")[before]
        assert first_after_restart is not None
        assert held > 0
        assert int(first_after_restart.removeprefix("bytes=").rstrip("-")) >= held
        assert m.store.blobs.blob_path(manifest["sha256"]).read_bytes() == MODEL
    finally:
        await m.close()


async def test_corrupt_blob_on_disk_is_never_served(reg: Registry, tmp_path: Path) -> None:
    manifest = reg.publish(MODEL)
    m = await open_mirror(reg, str(reg.root), tmp_path / "data")
    await m.poll_once()
    await settle(m, manifest["sha256"])
    await m.close()
    blob = tmp_path / "data" / "blobs" / "sha256" / manifest["sha256"]
    os.chmod(blob, 0o644)
    with blob.open("r+b") as f:
        f.seek(1000)
        f.write(b"rot")
    m = await open_mirror(reg, str(reg.root), tmp_path / "data")
    try:
        assert not m.store.is_verified(manifest["sha256"])
        assert isinstance(m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin"), Pending)
        await settle(m, manifest["sha256"])  # fetched again, verified again
        assert blob.read_bytes() == MODEL
    finally:
        await m.close()


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), so the disk really fills up."""
    with small_disk(tmp_path / "small", "1m") as data:
        yield data


async def test_disk_full_is_a_clear_error_and_old_artifacts_still_served(
    reg: Registry, small_disk: Path
) -> None:
    old = reg.publish(b"o" * 100_000, version="1.0.0")
    m = await open_mirror(reg, str(reg.root), small_disk)
    m.fetcher.min_free_bytes = 0  # let the write itself hit ENOSPC
    try:
        await m.poll_once()
        await settle(m, old["sha256"])
        big = reg.publish(os.urandom(2_000_000), version="2.0.0")
        await m.poll_once()
        for _ in range(500):
            if m.stats["mirror.storage_errors"]:
                break
            await asyncio.sleep(0.01)
        assert "disk full" in m.stats.last_error["mirror.storage_errors"]
        assert not m.store.is_verified(big["sha256"])
        got = m.store.lookup("detector", "1.0.0", "detector-1.0.0.bin")
        assert isinstance(got, Verified)
        assert got.path.read_bytes() == b"o" * 100_000
    finally:
        await m.close()
