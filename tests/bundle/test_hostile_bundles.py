"""Hostile bundles and watched folders, against real gateway processes and the running import path:

- a FIFO (or a symlink to one) in the watched folder never blocks the imports after it, nor the
  gateway's shutdown (the unit's TimeoutStopSec is 20 s);
- a ``bundle.json`` of the wrong shape (``"members": 5``) or nested 100,000 deep is one clear
  report, running or offline, and an unchanged bad file is never imported again;
- a report names what is wrong with a member (its size, its type, its sha256), never "incomplete
  (0 of N bytes)" for a file that is there; a damaged partial of an unchunked model never makes
  the genuine bundle fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.bundle.importer import ArtifactOutcome, IndexOutcome
from gateway.bundle.layout import MANIFEST_NAME
from gateway.service.wiring import Gateway
from tests.bundle.kit import device_update, flip, make_bundle, member_offset, members
from tests.bundle.test_process import ENV, cli, export, until_verified
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, base_url, gateway_settings, running, until
from tests.peers import free_port, gateway_process, serve_args, wait_port

pytestmark = pytest.mark.slow  # a long fault-injection run: SLOW_TESTS=1 runs it (a .ci/run step)

MODEL = os.urandom(300_000)
SHA = hashlib.sha256(MODEL).hexdigest()
ART = "artifacts/detector/1.0.0/detector-1.0.0.bin"
STOP_TIMEOUT_S = 20  # deploy/ota-gateway.service


@contextmanager
def gateway(
    reg: Registry, data: Path, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = serve_args(data, "", port, site="test-site", trusted_key=reg.public_key)
    with log.open("wb") as err:
        proc = gateway_process(args, env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port(port, 30)
            yield f"http://127.0.0.1:{port}", proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def with_manifest(bundle: Path, dest: Path, raw: bytes) -> Path:
    """``bundle`` with its ``bundle.json`` replaced by ``raw``."""
    files = members(bundle)
    files[MANIFEST_NAME] = raw
    with tarfile.open(dest, "w:") as tf:
        for name in [MANIFEST_NAME, *[n for n in files if n != MANIFEST_NAME]]:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))
    return dest


def bad_manifests(bundle: Path) -> dict[str, bytes]:
    doc = json.loads(members(bundle)[MANIFEST_NAME])
    return {
        "members5": json.dumps({**doc, "members": 5}).encode(),
        "deep": json.dumps({**doc, "members": "X"}).encode().replace(b'"X"', b"[" * 100_000 + b"]" * 100_000),
        "itemstr": json.dumps({**doc, "members": ["a"]}).encode(),
    }


# -- a FIFO in the watched folder --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_fifo_in_the_watched_folder_blocks_neither_imports_nor_shutdown(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    stick = tmp_path / "usb"
    stick.mkdir()
    fifo, link, good = rng.sample(["a.tar", "m.tar", "z.tar"], 3)  # scanned in name order
    os.mkfifo(stick / fifo)
    (stick / link).symlink_to(stick / fifo)
    with gateway(reg, tmp_path / "data", tmp_path / "log", OTA_GATEWAY_MIRROR__IMPORT_DIR=str(stick)) as (
        base,
        proc,
    ):
        await asyncio.sleep(rng.uniform(0, 1.0))  # the good bundle lands at a random instant
        shutil.copyfile(bundle, stick / good)
        manifest = await until_verified(base, reg, 40)
        assert manifest["sha256"] == SHA
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S + 5)
        took = time.monotonic() - started
    assert code == 0 and took < STOP_TIMEOUT_S, f"stopped in {took:.1f} s with {code}"
    log = (tmp_path / "log").read_text()
    assert f"{fifo}: not a regular file" in log and "Traceback" not in log, log[-3000:]


# -- bundle.json of the wrong shape -------------------------------------------------------------------------


async def test_a_mis_shaped_bundle_json_is_one_report_and_never_retried(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    bad = {k: with_manifest(bundle, tmp_path / f"{k}.tar", raw) for k, raw in bad_manifests(bundle).items()}
    stick = tmp_path / "usb"
    stick.mkdir()
    data = tmp_path / "data"
    with gateway(reg, data, tmp_path / "log", OTA_GATEWAY_MIRROR__IMPORT_DIR=str(stick)) as (base, _proc):
        for name, path in bad.items():  # handed over to the running gateway: an answer, not an hour's wait
            started = time.monotonic()
            done = await asyncio.to_thread(cli, "import", str(path), "--data", str(data), "--wait-s", "30")
            assert time.monotonic() - started < 20, f"{name}: {done.stdout}"
            assert done.returncode == 1 and "unreadable bundle" in done.stdout, f"{name}: {done.stdout}"
            assert "bundle.json" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
        for name, path in bad.items():  # on the stick: imported once, then left alone while unchanged
            shutil.copyfile(path, stick / f"{name}.tar")
        results = [data / "import" / "results" / f"{name}.json" for name in bad]
        await until(lambda: all(r.exists() for r in results), 20, "a result for every bad bundle")
        shutil.copyfile(bundle, stick / "site.tar")  # scans go on: a good bundle still arrives
        await until_verified(base, reg, 40)
        for _ in range(5):  # a few more scans (0.2 s each) past the good one
            await until((data / "import" / "results" / "site.json").exists, 10)
            await asyncio.sleep(0.2)
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log, log[-3000:]
    for name in bad:
        assert log.count(f"importing bundle {stick / name}.tar") == 1, log[-3000:]
        assert not json.loads((data / "import" / "results" / f"{name}.json").read_text())["ok"]


async def test_a_mis_shaped_bundle_json_offline_is_one_line(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    for name, raw in bad_manifests(bundle).items():
        path = with_manifest(bundle, tmp_path / f"{name}.tar", raw)
        args = ["import", str(path), "--data", str(tmp_path / "data"), "--site", "test-site",
                "--trusted-key", str(reg.public_key), "--wait-s", "30"]  # fmt: skip
        done = await asyncio.to_thread(cli, *args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "unreadable bundle" in done.stdout and "bundle.json" in done.stdout, done.stdout


# -- reports that name what is wrong ------------------------------------------------------------------------


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = gateway_settings(reg, tmp_path / "data", upstream="", gates=OPEN_FIRST)
    async with running(settings) as g:
        yield g


def retyped(bundle: Path, dest: Path, *, extra: bytes = b"", kind: bytes | None = None) -> Path:
    """``bundle`` (its ``bundle.json`` untouched) whose tar holds the artifact with ``extra`` bytes
    more, or as a ``kind`` entry (a symlink, a folder) instead of a file."""
    files = members(bundle)
    files[ART] += extra
    with tarfile.open(dest, "w:") as tf:
        for name in [MANIFEST_NAME, *[n for n in files if n != MANIFEST_NAME]]:
            info = tarfile.TarInfo(name)
            if name == ART and kind is not None:
                info.type = kind
                info.linkname = "elsewhere" if kind == tarfile.SYMTYPE else ""
                tf.addfile(info)
                continue
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))
    return dest


async def test_reports_name_a_size_a_type_or_a_sha256_mismatch(
    reg: Registry, gw: Gateway, tmp_path: Path
) -> None:
    reg.publish(MODEL, chunk_size=0)
    whole = make_bundle(reg, tmp_path / "site.tar")
    cases = {
        "size": (retyped(whole, tmp_path / "size.tar", extra=b"1234567"), f"holds {len(MODEL) + 7} bytes"),
        "symlink": (retyped(whole, tmp_path / "link.tar", kind=tarfile.SYMTYPE), "symlink"),
        "folder": (retyped(whole, tmp_path / "dir.tar", kind=tarfile.DIRTYPE), "folder"),
    }
    for name, (path, words) in cases.items():
        report = await gw.imports.importer.run(path, timeout_s=30)
        outcome, why = report.artifacts["detector@1.0.0"]
        assert outcome is not ArtifactOutcome.INCOMPLETE and "0 of" not in why, f"{name}: {report.lines()}"
        assert words in why and not report.ok, f"{name}: {report.lines()}"
    start, size = member_offset(whole, ART)
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(flip(whole.read_bytes(), start + size // 2))
    report = await gw.imports.importer.run(damaged, timeout_s=30)
    outcome, why = report.artifacts["detector@1.0.0"]
    assert outcome is ArtifactOutcome.REFUSED and "sha256" in why, report.lines()
    assert (await gw.imports.importer.run(whole, timeout_s=30)).ok


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_damaged_partial_never_blocks_the_genuine_bundle(
    reg: Registry, gw: Gateway, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    reg.publish(MODEL, chunk_size=0)  # unchunked: nothing tells a bad byte before the whole file
    whole = make_bundle(reg, tmp_path / "site.tar")
    start, size = member_offset(whole, ART)
    cut_at = rng.randrange(size // 10, size - 1)
    raw = flip(whole.read_bytes(), start + rng.randrange(0, cut_at))[: start + cut_at]
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(raw)  # a damaged, cut copy: its partial is kept, waiting for the rest
    first = await gw.imports.importer.run(damaged, timeout_s=30)
    assert first.index is IndexOutcome.ACCEPTED and not first.ok, first.lines()
    report = await gw.imports.importer.run(whole, timeout_s=30)
    assert report.ok, report.lines()
    assert report.artifacts["detector@1.0.0"] == (ArtifactOutcome.VERIFIED, "")
    assert (await device_update(base_url(gw), "cam-1", reg.public_key))[0] == 200
