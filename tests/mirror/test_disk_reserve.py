"""The free-space reserve: scaled to small disks, and named when it is why a download is refused.

The pure rule first, then a real mirror on a real 8 MiB tmpfs with the default reserve (256 MiB),
which used to refuse every artifact on such a disk with a "disk full" that was not."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.settings import StoreSettings
from gateway.runtime.diskspace import disk_space, reserve_bytes, space_refusal
from tests.conftest import Registry
from tests.mirror.test_mirror import open_mirror, settle
from tests.peers import small_disk

MiB = 1 << 20


@pytest.mark.parametrize(
    ("configured", "total", "reserve"),
    [
        (256 * MiB, 64 * 1024 * MiB, 256 * MiB),  # a big disk: as configured
        (256 * MiB, 4 * 1024 * MiB, 204 * MiB + 819 * 1024 + 204),  # a 4 GiB SD card: 5 %
        (256 * MiB, 8 * MiB, 419_430),
        (0, 8 * MiB, 0),
    ],
)
def test_reserve_is_capped_at_5_percent_of_the_filesystem(configured: int, total: int, reserve: int) -> None:
    assert reserve_bytes(configured, total) == reserve


def test_space_refusal_names_the_reserve_when_it_is_the_reason() -> None:
    kw = {"configured": 256 * MiB, "fs_total_bytes": 64 * 1024 * MiB}
    assert space_refusal("m@1", free=1024 * MiB, need=100 * MiB, **kw) is None
    why = space_refusal("m@1", free=300 * MiB, need=100 * MiB, **kw)
    assert why is not None and "reserve of 268435456 bytes" in why and "store.min_free_bytes" in why
    why = space_refusal("m@1", free=50 * MiB, need=100 * MiB, **kw)
    assert why is not None and "reserve" not in why and "disk full" in why


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system (tmpfs)."""
    with small_disk(tmp_path / "small", "8m") as data:
        yield data


async def test_a_small_disk_takes_models_with_the_default_reserve_and_says_when_it_is_the_reserve(
    reg: Registry, small_disk: Path
) -> None:
    assert StoreSettings().min_free_bytes == 256 * MiB  # the default, far more than this disk
    first = reg.publish(os.urandom(MiB), version="1.0.0")
    m = await open_mirror(reg, str(reg.root), small_disk)
    try:
        await m.poll_once()
        await settle(m, first["sha256"])  # fits: the reserve in effect is 5 % of 8 MiB
        free, _ = disk_space(small_disk)
        # Fits in the free space, but would leave ~200 kB, under the 410 kB reserve.
        second = reg.publish(os.urandom(free - 200_000), version="2.0.0")
        await m.poll_once()
        for _ in range(500):
            if m.stats["mirror.storage_errors"]:
                break
            await asyncio.sleep(0.01)  # polling a condition with a deadline
        why = m.stats.last_error["mirror.storage_errors"]
        assert "reserve of 419430 bytes" in why and "store.min_free_bytes" in why, why
        assert not m.store.is_verified(second["sha256"])
    finally:
        await m.close()
