"""One lifecycle: a busy data folder is left exactly as it was, and a failed start closes what it
opened.

The first test plays the folder's owner with the real lock (:mod:`gateway.store.lock`, an
``flock`` on ``<data>/.lock``) over a folder whose state files a start would repair (damaged ones
are moved aside): a real ``ota-gateway serve`` on it is refused, and every file's name, size, bytes
and mtime are as before. Before the fix the trust state's constructor moved ``state.json`` aside
before the lock was even asked for.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.service.wiring import Gateway
from gateway.store.lock import lock_data_dir
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import ROOT, free_port, gateway_process, stop

Snapshot = dict[str, tuple[int, int, str]]


def snapshot(folder: Path) -> Snapshot:
    """Every path under ``folder``: (size, mtime in ns, sha256 of its bytes; "dir" for a folder)."""
    out: Snapshot = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
    return out


async def test_a_second_serve_on_a_busy_folder_changes_nothing_on_disk(reg: Registry, tmp_path: Path) -> None:
    data = tmp_path / "data"
    reg.publish(os.urandom(50_000), version="1.0.0")
    async with running(gateway_settings(reg, data)) as gw:
        await until(lambda: gw.mirror.index is not None and gw.store.verified, what="a mirrored model")
    # Damaged state a start repairs by moving it aside: nothing may happen to it while busy.
    for name in ("trust/state.json", "catalog.json", "inventory.json", "gates/gates.json"):
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_bytes(b"{ damaged")
    holder = lock_data_dir(data)  # the folder's owner, as a running gateway holds it
    try:
        before = snapshot(data)
        args = ["--data", str(data), "--upstream", str(reg.root), "--trusted-key", str(reg.public_key),
                "--http", f"127.0.0.1:{free_port()}", "--operator", f"127.0.0.1:{free_port()}",
                "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
        proc = gateway_process(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            stop(proc)
        assert proc.returncode != 0
        assert b"in use by another gateway process" in err, err[-2000:]
        assert snapshot(data) == before
    finally:
        holder.close()


async def test_a_failed_start_closes_what_it_opened_in_reverse(reg: Registry, tmp_path: Path) -> None:
    data = tmp_path / "data"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    settings = gateway_settings(reg, data, operator={"listen": f"127.0.0.1:{busy}"})
    gw = Gateway.from_settings(settings)
    try:
        with pytest.raises(ConfigError, match="a free address"):
            await gw.start()
        http_port = gw.http_addresses[0][1]  # the device API had opened before the operator failed
    finally:
        taken.close()
    lock = lock_data_dir(data)  # released: a fresh start (or a maintenance command) may take it
    lock.close()
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", http_port))  # the device API's listener was closed
    again.close()
    assert not (data / "gateway.json").exists()
    async with running(gateway_settings(reg, data)) as gw2:  # and the folder starts cleanly
        assert gw2.http_addresses
