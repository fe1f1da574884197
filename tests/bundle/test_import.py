"""Importing bundles into a running gateway with no upstream (an air-gapped site), through the
mirror's own path: good, tampered, old, expired, for another site, truncated, twice."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.bundle.importer import ArtifactOutcome, IndexOutcome
from gateway.service.wiring import Gateway
from tests.bundle.kit import device_update, flip, make_bundle, member_offset, rewrite
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running

MODEL = os.urandom(300_000)
SHA = hashlib.sha256(MODEL).hexdigest()
ART = "artifacts/detector/1.0.0/detector-1.0.0.bin"


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = gateway_settings(reg, tmp_path / "data", upstream="", gates=OPEN_FIRST)
    async with running(settings) as g:
        yield g


async def test_a_good_bundle_is_served_and_verifies_against_the_cloud_key(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    bundle = make_bundle(reg, tmp_path / "site.tar")
    assert await device_update(base_url(gw), "cam-1", reg.public_key) == (204, None)
    report = await gw.imports.importer.run(bundle, timeout_s=30)
    assert report.ok and report.changed, report.lines()
    assert report.index is IndexOutcome.ACCEPTED
    assert report.artifacts == {"detector@1.0.0": (ArtifactOutcome.VERIFIED, "")}
    status, manifest = await device_update(base_url(gw), "cam-1", reg.public_key)
    assert status == 200 and manifest is not None and manifest["sha256"] == SHA


async def test_importing_twice_changes_nothing_the_second_time_and_says_so(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    bundle = make_bundle(reg, tmp_path / "site.tar")
    assert (await gw.imports.importer.run(bundle, timeout_s=30)).changed
    trust_state = (gw.data / "trust" / "state.json").read_bytes()
    again = await gw.imports.importer.run(bundle, timeout_s=30)
    assert again.ok and not again.changed
    assert again.index is IndexOutcome.HELD
    assert again.artifacts == {"detector@1.0.0": (ArtifactOutcome.HELD, "")}
    assert "nothing new" in again.lines()[-1]
    assert (gw.data / "trust" / "state.json").read_bytes() == trust_state


async def test_an_artifact_with_a_flipped_byte_is_refused_and_the_good_bundle_still_imports(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL, chunk_size=0)  # the whole file's sha256 decides (no chunk list)
    good = make_bundle(reg, tmp_path / "site.tar")
    bad = rewrite(good, tmp_path / "bad.tar", lambda f: f.__setitem__(ART, flip(f[ART], 1234)))
    report = await gw.imports.importer.run(bad, timeout_s=30)
    assert report.index is IndexOutcome.ACCEPTED  # the index is genuine; its artifact is not
    outcome, why = report.artifacts["detector@1.0.0"]
    assert outcome is ArtifactOutcome.REFUSED and "sha256" in why, why
    assert not report.ok
    assert (await device_update(base_url(gw), "cam-1", reg.public_key))[0] in (204, 503)
    assert not gw.store.is_verified(SHA)
    fixed = await gw.imports.importer.run(good, timeout_s=30)
    assert fixed.ok and fixed.artifacts["detector@1.0.0"][0] is ArtifactOutcome.VERIFIED
    assert (await device_update(base_url(gw), "cam-1", reg.public_key))[0] == 200


def _edit_index(files: dict[str, bytes], edit: object) -> None:
    rel = "sites/test-site/index.json"
    doc = json.loads(files[rel])
    assert callable(edit)
    edit(doc)
    files[rel] = json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("name", "edit", "why"),
    [
        ("widened", lambda d: d["signed"]["deployments"][0].update(rollout_percentage=100.0), "signature"),
        ("unsigned", lambda d: d.update(signatures=[]), "unsigned"),
    ],
)
async def test_an_index_whose_signature_is_broken_is_refused(
    reg: Registry, gw: Gateway, tmp_path: Path, name: str, edit: object, why: str
) -> None:
    reg.publish(MODEL, percent=5.0)
    bundle = make_bundle(reg, tmp_path / "site.tar")
    bad = rewrite(bundle, tmp_path / f"{name}.tar", lambda f: _edit_index(f, edit))
    report = await gw.imports.importer.run(bad, timeout_s=30)
    assert report.index is IndexOutcome.REFUSED and why in report.why, report.lines()
    assert gw.mirror.index is None and not gw.store.is_verified(SHA)
    assert (await device_update(base_url(gw), "cam-1", reg.public_key)) == (204, None)


async def test_an_old_bundle_is_refused_and_the_last_good_state_keeps_serving(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    old = make_bundle(reg, tmp_path / "v1.tar")
    reg.publish(MODEL[::-1], version="2.0.0")
    new = make_bundle(reg, tmp_path / "v2.tar")
    assert (await gw.imports.importer.run(new, timeout_s=30)).ok
    held = gw.mirror.index
    assert held is not None
    report = await gw.imports.importer.run(old, timeout_s=30)
    assert report.index is IndexOutcome.REFUSED and "rollback" in report.why, report.lines()
    assert gw.mirror.index is held
    status, manifest = await device_update(base_url(gw), "cam-1", reg.public_key)
    assert status == 200 and manifest is not None and manifest["version"] == "2.0.0"


async def test_an_expired_bundle_is_refused(reg: Registry, gw: Gateway, tmp_path: Path) -> None:
    reg.publish(MODEL, now=time.time() - 7200, expires_s=3600)
    report = await gw.imports.importer.run(make_bundle(reg, tmp_path / "late.tar"), timeout_s=30)
    assert report.index is IndexOutcome.REFUSED and "expired" in report.why, report.lines()
    assert gw.mirror.index is None


async def test_a_bundle_for_another_site_is_not_taken(reg: Registry, gw: Gateway, tmp_path: Path) -> None:
    reg.publish(MODEL, site="plant-9")
    other = tmp_path / "other.tar"
    from gateway.bundle.export import export

    export(reg.root, "plant-9", other)
    report = await gw.imports.importer.run(other, timeout_s=30)
    assert report.index is IndexOutcome.ABSENT and "test-site" in report.why
    # Its index put where this site's belongs: the signed site name gives it away.
    moved = rewrite(
        other,
        tmp_path / "moved.tar",
        lambda f: f.__setitem__("sites/test-site/index.json", f.pop("sites/plant-9/index.json")),
    )
    report = await gw.imports.importer.run(moved, timeout_s=30)
    assert report.index is IndexOutcome.REFUSED and "plant-9" in report.why, report.lines()
    assert gw.mirror.index is None


async def test_a_truncated_bundle_keeps_what_verified_and_the_whole_one_completes_it(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL, chunk_size=0)  # no chunk list: nothing served before the whole file
    whole = make_bundle(reg, tmp_path / "site.tar")
    start, size = member_offset(whole, ART)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: start + size // 3])
    report = await gw.imports.importer.run(cut, timeout_s=30)
    assert report.index is IndexOutcome.ACCEPTED, report.lines()
    outcome, why = report.artifacts["detector@1.0.0"]
    assert outcome is ArtifactOutcome.INCOMPLETE, why
    assert not report.ok and "not complete" in report.lines()[-1]
    assert gw.store.blobs.partial_state(SHA)[0] > 0  # kept, never served:
    assert (await device_update(base_url(gw), "cam-1", reg.public_key))[0] in (204, 503)
    async with aiohttp.ClientSession() as s, s.get(f"{base_url(gw)}/{ART}") as r:
        assert r.status == 503
    done = await gw.imports.importer.run(whole, timeout_s=30)
    assert done.ok and done.index is IndexOutcome.HELD
    assert done.artifacts["detector@1.0.0"][0] is ArtifactOutcome.VERIFIED
    assert (await device_update(base_url(gw), "cam-1", reg.public_key))[0] == 200


async def test_a_bundle_cut_inside_its_index_changes_nothing(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    whole = make_bundle(reg, tmp_path / "site.tar")
    start, size = member_offset(whole, "sites/test-site/index.json")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: start + size // 2])
    report = await gw.imports.importer.run(cut, timeout_s=30)
    assert report.index is IndexOutcome.INCOMPLETE, report.lines()
    assert gw.mirror.index is None
    head = tmp_path / "head.tar"
    head.write_bytes(whole.read_bytes()[:700])  # not even bundle.json whole
    assert (await gw.imports.importer.run(head, timeout_s=30)).index is IndexOutcome.UNREADABLE
