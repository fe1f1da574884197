"""The commands and the watched folder with real processes: ``registry export`` writes the bundle,
a gateway process imports it from ``mirror.import_dir`` (a stick) or from ``ota-gateway import``
(handed over while it runs, or offline while it is stopped), and a device verifies what it gets
against the cloud's key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.bundle.kit import device_update
from tests.conftest import Registry
from tests.gw import until
from tests.peers import ROOT, free_port, gateway_process, serve_args, stop, wait_port

MODEL = os.urandom(400_000)
SHA = hashlib.sha256(MODEL).hexdigest()
ENV = {
    "OTA_GATEWAY_GATES__FIRST_VERSION": "open",
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5",
    "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.05",
    "OTA_GATEWAY_MIRROR__IMPORT_SCAN_S": "0.2",
}


def cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


@contextmanager
def gateway(reg: Registry, data: Path, **env: str) -> Iterator[str]:
    port = free_port()
    args = serve_args(data, "", port, site="test-site", trusted_key=reg.public_key)
    proc = gateway_process(args, env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


async def until_verified(base: str, reg: Registry, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, manifest = await device_update(base, "cam-1", reg.public_key)
        if status == 200 and manifest is not None:
            return manifest
        await asyncio.sleep(0.1)  # polling the device API with a deadline
    raise AssertionError("the device was never offered the verified artifact")


def export(reg: Registry, dest: Path) -> Path:
    done = cli("registry", "export", "--registry", str(reg.root), "--site", "test-site", str(dest))
    assert done.returncode == 0, done.stderr
    return dest


def test_registry_export_writes_the_index_keys_artifacts_signatures_and_named_files(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL)  # with its chunk list (chunks.url), a file the manifest names
    from gateway import registry

    registry.sign_key_list(reg.root, reg.private_key, [reg.public_key], version=1)
    bundle = export(reg, tmp_path / "b.tar")
    with tarfile.open(bundle) as tf:
        names = tf.getnames()
        f = tf.extractfile("bundle.json")
        assert f is not None
        doc = json.loads(f.read())
    assert names[0] == "bundle.json"
    assert names[1:3] == ["keys.json", "sites/test-site/index.json"]
    assert sorted(names[3:-1]) == [
        "artifacts/detector/1.0.0/detector-1.0.0.bin.chunks",
        "artifacts/detector/1.0.0/detector-1.0.0.bin.sig",
    ]
    assert names[-1] == "artifacts/detector/1.0.0/detector-1.0.0.bin"  # a cut loses an artifact's tail
    listed = {m["name"]: m for m in doc["members"]}
    assert listed["artifacts/detector/1.0.0/detector-1.0.0.bin"]["sha256"] == SHA
    assert list(tmp_path.glob(".*part")) == []


async def test_a_bundle_on_the_watched_stick_reaches_devices(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    stick = tmp_path / "usb"
    data = tmp_path / "data"
    with gateway(reg, data, OTA_GATEWAY_MIRROR__IMPORT_DIR=str(stick)) as base:
        assert (await device_update(base, "cam-1", reg.public_key))[0] == 204
        stick.mkdir()  # the stick is mounted
        shutil.copyfile(bundle, stick / "site.tar")
        manifest = await until_verified(base, reg)
        assert manifest["sha256"] == SHA
        result = data / "import" / "results" / "site.json"
        await until(result.exists, 10, "the import's result file")
        report = json.loads(result.read_text())
        assert report["ok"] and report["changed"]


async def test_the_import_command_hands_over_to_a_running_gateway(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    data = tmp_path / "data"
    with gateway(reg, data) as base:
        done = await asyncio.to_thread(cli, "import", str(bundle), "--data", str(data), "--wait-s", "30")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "index version 1: accepted" in done.stdout
        await until_verified(base, reg)
        again = await asyncio.to_thread(cli, "import", str(bundle), "--data", str(data), "--wait-s", "30")
        assert again.returncode == 0 and "nothing new" in again.stdout, again.stdout
        assert list((data / "import").glob("*.tar")) == []  # the spool's copies are gone


async def test_the_import_command_on_a_stopped_gateway(reg: Registry, tmp_path: Path) -> None:
    reg.publish(MODEL)
    bundle = export(reg, tmp_path / "site.tar")
    data = tmp_path / "data"
    args = [
        "import",
        str(bundle),
        "--data",
        str(data),
        "--site",
        "test-site",
        "--trusted-key",
        str(reg.public_key),
    ]
    done = await asyncio.to_thread(cli, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "detector@1.0.0: verified" in done.stdout
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[:-300_000])
    old = await asyncio.to_thread(cli, *args[:1], str(cut), *args[2:])
    assert old.returncode == 0 and "nothing new" in old.stdout, old.stdout  # held already, whole
    with gateway(reg, data) as base:  # no upstream at all: what the import took in serves
        await until_verified(base, reg)
