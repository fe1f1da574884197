"""A stick pulled at a random instant of an import: nothing unverified is served on any answer,
what verified stays, and putting the whole bundle back completes the import.

Several seeds; ``GATE_BUNDLE_SEEDS`` runs more (a longer ``.ci/run`` step)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from gateway.bundle.importer import ArtifactOutcome
from tests.bundle.kit import device_update, make_bundle
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running

SEEDS = int(os.environ.get("GATE_BUNDLE_SEEDS", "3"))
MODEL = os.urandom(6 << 20)
SHA = hashlib.sha256(MODEL).hexdigest()


def pull(stick: Path, rnd: random.Random) -> str:
    """What a pulled stick looks like to the reader: the file gone, cut short, or another file."""
    how = rnd.choice(["gone", "cut", "other"])
    if how == "gone":
        stick.unlink()
    elif how == "cut":
        os.truncate(stick, rnd.randrange(stick.stat().st_size))
    else:
        stick.unlink()
        stick.write_bytes(os.urandom(4096))
    return how


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_a_stick_pulled_at_a_random_instant(reg: Registry, tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    reg.publish(MODEL)
    whole = make_bundle(reg, tmp_path / "whole.tar")
    stick = tmp_path / "stick" / "site.tar"
    stick.parent.mkdir()
    shutil.copyfile(whole, stick)
    settings = gateway_settings(reg, tmp_path / "data", upstream="", gates=OPEN_FIRST)
    async with running(settings) as gw:
        answers: list[int] = []
        stop = asyncio.Event()

        async def device() -> None:
            while not stop.is_set():  # every answer is checked: 200 only with the cloud-signed bytes
                status, _ = await device_update(base_url(gw), f"cam-{seed}", reg.public_key)
                assert status in (200, 204, 503), status
                answers.append(status)
                await asyncio.sleep(rnd.uniform(0, 0.01))  # random instants, not a synchronisation

        watcher = asyncio.create_task(device())
        first = asyncio.create_task(gw.imports.importer.run(stick, timeout_s=30))
        await asyncio.sleep(rnd.uniform(0, 0.2))  # a random instant, not a synchronisation
        how = pull(stick, rnd)
        report = await first
        verified_before = gw.store.is_verified(SHA)
        shutil.copyfile(whole, stick)  # put back in
        again = await gw.imports.importer.run(stick, timeout_s=30)
        assert again.ok, (how, report.lines(), again.lines())
        done = ArtifactOutcome.HELD if verified_before else ArtifactOutcome.VERIFIED
        assert again.artifacts["detector@1.0.0"][0] is done
        status, manifest = await device_update(base_url(gw), "cam-last", reg.public_key)
        stop.set()
        await watcher
        assert status == 200 and manifest is not None and manifest["sha256"] == SHA
        assert answers, "the device was never answered"
